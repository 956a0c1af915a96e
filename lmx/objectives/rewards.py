"""Rewards for online RL: functions ``(prompts, completions, metadata) -> scores``, by name, combined
with weights.

Built in, for the generated tasks (`lmx.data.synth`; a prompt record carries its ``answer``):
- ``exact_match``: 1 when the completion is the answer (surrounding whitespace ignored), else 0;
- ``partial_credit``: the share of the answer's space-separated items the completion has at the
  same places, over the longer of the two (so extra items cost too);
- ``format``: 1 when the completion is space-separated integers, the form of every task's answer.

``rm:RUN_DIR`` is the score of an lmx reward-model run (`lmx.objectives.rm_reward`; RLHF). Anything
else is a user's function named ``path/to/file.py:name``, loaded from that file. A reward
that raises, or returns anything but one finite number per completion, fails as one line naming it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmx.errors import ConfigError, DataError
from lmx.objectives.rm_reward import RewardModelScore

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[Mapping[str, Any]]], Sequence[float]]

_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def add(fn: RewardFn) -> RewardFn:
        _REGISTRY[name] = fn
        return fn

    return add


def _answers(metadata: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    missing = [i for i, m in enumerate(metadata) if "answer" not in m]
    if missing:
        raise DataError(f"reward {name!r}: prompt {missing[0]} has no 'answer' in its record")
    return [str(m["answer"]) for m in metadata]


@register_reward("exact_match")
def exact_match(prompts, completions, metadata) -> list[float]:
    return [float(c.strip() == a.strip()) for c, a in zip(completions, _answers(metadata, "exact_match"), strict=True)]


@register_reward("partial_credit")
def partial_credit(prompts, completions, metadata) -> list[float]:
    scores = []
    for completion, answer in zip(completions, _answers(metadata, "partial_credit"), strict=True):
        got, want = completion.split(), answer.split()
        same = sum(g == w for g, w in zip(got, want, strict=False))
        scores.append(same / max(len(got), len(want), 1))
    return scores


_INTEGERS = re.compile(r"-?\d+( -?\d+)*")


@register_reward("format")
def integer_format(prompts, completions, metadata) -> list[float]:
    return [float(_INTEGERS.fullmatch(c.strip()) is not None) for c in completions]


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def load_reward(spec: str) -> RewardFn:
    """A built-in reward by name, a reward model's score (``rm:RUN_DIR``), or ``path/to/file.py:function``
    from a user's file."""
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if spec.startswith("rm:"):
        return RewardModelScore(spec[len("rm:") :], spec)
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise ConfigError(f"reward {spec!r}: not one of {', '.join(reward_names())}, nor path/to/file.py:function")
    if not Path(path).is_file():
        raise ConfigError(f"reward {spec!r}: {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"lmx_user_rewards_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's module: any error, reported as one line
        raise ConfigError(f"reward {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"reward {spec!r}: {path} defines no function {name!r}")
    return fn


def parse_reward_specs(text: str) -> list[tuple[str, float]]:
    """``"exact_match, format=0.1, my.py:fn=0.5"`` -> ``[(spec, weight), ...]`` (weight 1 by default)."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        spec, sep, weight = item.rpartition("=")
        if not sep:
            spec, weight = item, "1"
        try:
            value = float(weight)
        except ValueError:
            raise ConfigError(f"objective.rewards={text!r}: weight {weight!r} of {spec!r} is not a number") from None
        specs.append((spec.strip(), value))
    if not specs:
        raise ConfigError(f"objective.rewards={text!r}: name at least one reward")
    return specs


class Rewards:
    """Weighted rewards: ``total = sum(weight * reward)``, each reward also reported on its own.
    `specs` pairs a reward (a name, or path.py:function) with its weight."""

    def __init__(self, specs: Sequence[tuple[str, float]]) -> None:
        if not specs:
            raise ConfigError("rewards: name at least one")
        self.specs = tuple(specs)
        self._fns = tuple(load_reward(spec) for spec, _ in self.specs)

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(total [N], {name: scores [N]})`` for N completions of their prompts."""
        n = len(completions)
        total, each = np.zeros(n, np.float32), {}
        for (spec, weight), fn in zip(self.specs, self._fns, strict=True):
            try:
                values = fn(list(prompts), list(completions), list(metadata))
            except (ConfigError, DataError):
                raise
            except Exception as e:  # the user's code: any error, reported as one line naming it
                raise DataError(f"reward {spec!r} raised {type(e).__name__}: {e}") from None
            try:
                scores = np.asarray(values, np.float64)
            except (TypeError, ValueError):
                scores = np.zeros(0)
            if scores.shape != (n,) or not np.all(np.isfinite(scores)):
                raise DataError(f"reward {spec!r} must return one finite number per completion ({n})")
            scores = scores.astype(np.float32)
            each[spec] = scores
            total += weight * scores
        return total, each
