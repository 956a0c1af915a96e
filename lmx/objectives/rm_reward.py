"""A reward from a trained lmx reward model (objective.kind="reward_model"): ``rm:RUN_DIR`` in
``objective.rewards`` scores each completion as that run's model does (RLHF).

The reward model reads its own tokenizer's ids: each prompt is rendered as one user message through
the chat template, the completion follows as the response with its EOS, as in the pairs it was
trained on. A sequence longer than the reward model's ``data.seq_len`` is cut to it (the score is
read at the last token kept). It scores on one device, in batches of a fixed size (one compile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lmx.checkpoint.init_from import load_init_params
from lmx.config import MeshConfig, load_config
from lmx.data.chat import ChatTemplate, Message
from lmx.data.tokenizer import find_tokenizer, load_tokenizer
from lmx.errors import ConfigError
from lmx.model.reward import RewardModel
from lmx.parallel import make_mesh
from lmx.parallel.rules import abstract_params, activation_rules

ROWS = 32  # sequences scored per call


class RewardModelScore:
    """``(prompts, completions, metadata) -> scores``: the reward-model run `run_dir`'s scores."""

    def __init__(self, run_dir: str | Path, spec: str) -> None:
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"reward {spec!r}: {run_dir} is not a run directory (no config.json)")
        cfg = load_config(run_dir / "config.json")
        if cfg.objective.kind != "reward_model":
            raise ConfigError(f"reward {spec!r}: {run_dir} is a {cfg.objective.kind} run, not a reward model")
        tokenizer_path = find_tokenizer(run_dir)
        if tokenizer_path is None:
            raise ConfigError(f"reward {spec!r}: {run_dir} holds no tokenizer")
        self.template = ChatTemplate(load_tokenizer(tokenizer_path))
        self.seq_len = cfg.data.seq_len
        model = RewardModel(cfg.model, lm_head=cfg.objective.lm_loss_weight > 0)
        one = dataclasses.replace(MeshConfig(), data=1, fsdp=1, tensor=1)
        mesh = make_mesh(one, jax.devices()[:1])
        target = abstract_params(model, mesh, cfg.mesh.rules, cfg.data.seq_len)
        self.params, _, _ = load_init_params(str(run_dir), target)
        rules = cfg.mesh.rules

        def score(params: Any, tokens, segment_ids, positions) -> jax.Array:
            with activation_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return model.apply({"params": params}, tokens, segment_ids, positions)

        self._score = jax.jit(score)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> list[float]:
        sequences = [
            np.concatenate([self.template.prompt_ids([Message("user", p)]), self.template.response_ids(c)])[
                : self.seq_len
            ]
            for p, c in zip(prompts, completions, strict=True)
        ]
        scores: list[float] = []
        for start in range(0, len(sequences), ROWS):
            chunk = sequences[start : start + ROWS]
            tokens = np.zeros((ROWS, self.seq_len), np.int32)
            segment_ids = np.zeros((ROWS, self.seq_len), np.int32)
            for r, ids in enumerate(chunk):
                tokens[r, : len(ids)], segment_ids[r, : len(ids)] = ids, 1
            positions = np.broadcast_to(np.arange(self.seq_len, dtype=np.int32), tokens.shape)
            out = np.asarray(self._score(self.params, tokens, segment_ids, positions))
            scores.extend(float(s) for s in out[: len(chunk)])
        return scores
