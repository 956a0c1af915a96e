"""`lmx eval RUN --rollouts PROMPTS.jsonl --reward NAME`: mean rewards of a run's greedy answers to
held-out prompts and, with samples, pass@k of its sampled ones (`lmx.objectives.rl_task`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmx.data.chat import ChatTemplate
from lmx.data.prompts import read_prompts
from lmx.decode.rollout import RolloutGenerator
from lmx.decode.sampling import Sampling
from lmx.errors import ConfigError, DataError
from lmx.infer.runs import load_run
from lmx.objectives.registry import objective_of
from lmx.objectives.rewards import Rewards, parse_reward_specs
from lmx.objectives.rl_task import evaluate_rollouts

DEFAULT_MAX_NEW_TOKENS = 32


def rollouts_run(
    run_dir: str | Path,
    path: str,
    reward: str,
    samples: int = 0,
    step: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
    devices: Sequence[Any] | None = None,
    limit: int = 0,
) -> tuple[int, dict[str, float]]:
    """``(step, metrics)``: `lmx.objectives.rl_task.evaluate_rollouts` of the run's checkpoint on the
    prompts of `path`. `max_new_tokens` 0: an RL run's own, else DEFAULT_MAX_NEW_TOKENS. `limit`:
    only the first prompts that fit (0: all)."""
    run = load_run(run_dir, step, devices)
    if not objective_of(run.cfg).generates:
        raise ConfigError(f"{run_dir}: a {run.cfg.objective.kind} run does not generate text")
    if not max_new_tokens:
        max_new_tokens = getattr(run.cfg.objective, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    template = ChatTemplate(run.require_tokenizer())
    rewards = Rewards(parse_reward_specs(reward))
    prompts, stats = read_prompts(path, template, run.cfg.model.max_seq_len - max_new_tokens)
    if not prompts:
        raise DataError(f"{path}: no prompt leaves room for {max_new_tokens} new tokens in the model's context")
    prompts = prompts[: limit or None]
    generator = RolloutGenerator(
        run.model, run.params, run.mesh, run.cfg.mesh.rules, batch_size, eos_id=template.eos_id, pad_id=template.pad_id
    )
    sampling = Sampling(temperature=temperature, seed=seed)
    metrics = evaluate_rollouts(generator, template, prompts, rewards, max_new_tokens, samples, sampling)
    metrics["dropped_prompts"] = float(stats.dropped)
    return run.step, metrics
