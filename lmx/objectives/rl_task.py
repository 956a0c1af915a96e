"""What an online RL run trains on: prompts, rollouts from the current policy, rewards, and the
batch the step updates from (`lmx.objectives.rl` holds the config, the loss and the step's prepare).

Each step takes the step's prompts (`lmx.data.prompts.prompt_indices`), repeats each G times (rows
are group-major: prompt p's samples are rows p*G .. p*G+G-1), samples them in one compiled loop
(`lmx.decode.rollout`) with a seed drawn from (train.seed, step), and scores them. Prompt order and
seed depend on the step alone, so a resumed run samples exactly what an uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lmx.config import Config
from lmx.data.chat import ChatTemplate
from lmx.data.prompts import Prompt, PromptStats, prompt_indices, read_prompts
from lmx.decode.rollout import RolloutGenerator, Rollouts
from lmx.decode.sampling import GREEDY, Sampling
from lmx.errors import ConfigError, DataError
from lmx.objectives.base import Log, Objective, check_vocab
from lmx.objectives.chat import chat_tokenizer
from lmx.objectives.rewards import Rewards, parse_reward_specs
from lmx.objectives.rl_losses import overlong_penalty


def step_seed(seed: int, step: int) -> int:
    return int(np.random.default_rng([seed, step, 0x5EED]).integers(2**31 - 1))


def completion_texts(template: ChatTemplate, rollouts: Rollouts) -> list[str]:
    """Each completion's text, without the EOS that ended it."""
    return [
        template.tokenizer.decode(tokens[: n - int(ended)].tolist())
        for tokens, n, ended in zip(rollouts.tokens, rollouts.lengths, rollouts.ended, strict=True)
    ]


def sample_prompts(
    generator: RolloutGenerator, prompts: Sequence[Prompt], max_new: int, sampling: Sampling
) -> Rollouts:
    """Rollouts of any number of prompts, `generator.batch_size` at a time (seeds advance by batch)."""
    parts = []
    for start in range(0, len(prompts), generator.batch_size):
        chunk = [p.ids.tolist() for p in prompts[start : start + generator.batch_size]]
        seeded = dataclasses.replace(sampling, seed=sampling.seed + start)
        parts.append(generator.rollout(chunk, max_new, seeded))
    return Rollouts(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("tokens", "logps", "lengths", "ended")),
        steps=max(p.steps for p in parts),
    )


def evaluate_rollouts(
    generator: RolloutGenerator,
    template: ChatTemplate,
    prompts: Sequence[Prompt],
    rewards: Rewards,
    max_new: int,
    samples: int = 0,
    sampling: Sampling | None = None,
) -> dict[str, float]:
    """Mean rewards of greedy answers to `prompts` and, with `samples` > 0, of that many sampled
    answers each with pass@k: the share of prompts with at least one sample that earns every
    reward's full score (a total of at least the weights' sum; exact match itself, for exact_match)."""
    texts = [p.text for p in prompts]
    meta = [p.metadata for p in prompts]
    greedy = sample_prompts(generator, prompts, max_new, GREEDY)
    total, each = rewards.score(texts, completion_texts(template, greedy), meta)
    out = {"reward": float(total.mean()), "prompts": float(len(prompts)), "length": float(greedy.lengths.mean())}
    out.update({f"reward/{name}": float(v.mean()) for name, v in each.items()})
    if samples:
        repeated = [p for p in prompts for _ in range(samples)]
        drawn = sample_prompts(generator, repeated, max_new, sampling or Sampling())
        scores, _ = rewards.score(
            [p.text for p in repeated], completion_texts(template, drawn), [p.metadata for p in repeated]
        )
        full = sum(weight for _, weight in rewards.specs)
        passed = (scores.reshape(len(prompts), samples) >= full - 1e-6).any(axis=1)
        out.update(
            {"sampled_reward": float(scores.mean()), "pass_at_k": float(passed.mean()), "samples": float(samples)}
        )
    return out


def rollout_rows(
    prompts: Sequence[np.ndarray], rollouts: Rollouts, rewards: np.ndarray, seq_len: int
) -> dict[str, np.ndarray]:
    """The step's batch: prompt + completion per row in the language model's layout (inputs,
    targets, segment_ids, positions), the loss on the completion's tokens (``loss_mask``), the
    sampler's log-probs at the same places, and each row's reward."""
    B, L = len(prompts), seq_len
    out = {k: np.zeros((B, L), np.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
    out["loss_mask"] = np.zeros((B, L), np.float32)
    out["sampler_logps"] = np.zeros((B, L), np.float32)
    for r, (prompt, completion, logps, n) in enumerate(
        zip(prompts, rollouts.tokens, rollouts.logps, rollouts.lengths, strict=True)
    ):
        sequence = np.concatenate([prompt, completion[:n]])
        width = len(sequence) - 1
        out["inputs"][r, :width] = sequence[:-1]
        out["targets"][r, :width] = sequence[1:]
        out["segment_ids"][r, :width] = 1
        out["positions"][r, :width] = np.arange(width)
        first = len(prompt) - 1  # the target position of the completion's first token
        out["loss_mask"][r, first : first + n] = 1.0
        out["sampler_logps"][r, first : first + n] = logps[:n]
    out["rewards"] = rewards.astype(np.float32)
    return out


class RLTask:
    """Prompts, rewards and rollouts of one RL run (`lmx.objectives.base.Task`, online)."""

    def __init__(self, cfg: Config, mesh: Mesh, model: nn.Module, objective: Objective, log: Log = print) -> None:
        if jax.process_count() > 1:
            raise ConfigError("objective.kind='rl' runs in one process for now (its rollouts gather on the host)")
        self.cfg, self.mesh, self.model, self.objective, self.log = cfg, mesh, model, objective, log
        obj = cfg.objective
        self.hyper = obj.hyper()
        batch, seq_len = cfg.train.batch_size, cfg.data.seq_len
        if batch % obj.samples:
            raise ConfigError(
                f"train.batch_size={batch}: must be a multiple of objective.samples={obj.samples} "
                "(a step samples batch_size / samples prompts, samples times each)"
            )
        self.prompts_per_step = batch // obj.samples
        if obj.max_new_tokens > seq_len:
            raise ConfigError(f"objective.max_new_tokens={obj.max_new_tokens}: exceeds data.seq_len={seq_len}")
        self.tokenizer = chat_tokenizer(cfg)
        check_vocab(cfg, self.tokenizer)
        self.template = ChatTemplate(self.tokenizer)
        self.rewards = Rewards(parse_reward_specs(obj.rewards))
        # A row holds prompt + completion - 1 tokens as inputs (the last token is only a target).
        max_prompt = seq_len + 1 - obj.max_new_tokens
        self.prompts: dict[str, list[Prompt]] = {}
        self.stats: dict[str, PromptStats] = {}
        for split, patterns in (("train", obj.train_files), ("eval", obj.eval_files)):
            if patterns:
                self.prompts[split], self.stats[split] = read_prompts(patterns, self.template, max_prompt)
                s = self.stats[split]
                log(
                    f"{split} prompts {patterns}: {s.kept:,} kept of {s.records:,} "
                    f"({s.dropped} longer than {max_prompt} tokens)"
                )
        if not self.prompts["train"]:
            raise DataError(f"objective.train_files={obj.train_files!r}: no prompt fits in {max_prompt} tokens")
        self.batch_spec = {
            **{k: ((batch, seq_len), np.dtype(np.int32)) for k in ("inputs", "targets", "segment_ids", "positions")},
            "loss_mask": ((batch, seq_len), np.dtype(np.float32)),
            "sampler_logps": ((batch, seq_len), np.dtype(np.float32)),
            "rewards": ((batch,), np.dtype(np.float32)),
        }
        self.tokens_per_step = batch * seq_len * obj.updates  # tokens the updates process
        self._generator: RolloutGenerator | None = None

    def generator(self, params: Any) -> RolloutGenerator:
        """The rollout generator (one compiled loop), decoding with `params` from now on."""
        if self._generator is None:
            self._generator = RolloutGenerator(
                self.model, params, self.mesh, self.cfg.mesh.rules, self.cfg.train.batch_size,
                eos_id=self.template.eos_id, pad_id=self.template.pad_id,
            )  # fmt: skip
        else:
            self._generator.load(params)
        return self._generator

    def train_batches(self, start_step: int = 0):
        raise TypeError("an online objective's batches come from next_batch(params, step)")

    def next_batch(self, params: Any, step: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Step `step`'s batch, sampled from the policy `params`, and its rollout metrics."""
        obj, hyper = self.cfg.objective, self.hyper
        start = time.perf_counter()
        generator = self.generator(params)
        jax.block_until_ready(generator.params)  # the previous update: not generation time
        ready = time.perf_counter()
        chosen = [
            self.prompts["train"][i]
            for i in prompt_indices(len(self.prompts["train"]), self.prompts_per_step, step, self.cfg.train.seed)
        ]
        rows = [p for p in chosen for _ in range(hyper.samples)]
        sampling = Sampling(temperature=obj.temperature, top_p=obj.top_p, seed=step_seed(self.cfg.train.seed, step))
        rollouts = generator.rollout([p.ids.tolist() for p in rows], obj.max_new_tokens, sampling)
        generated = time.perf_counter()
        texts = completion_texts(self.template, rollouts)
        total, each = self.rewards.score([p.text for p in rows], texts, [p.metadata for p in rows])
        if obj.overlong_cache:
            penalty = overlong_penalty(jnp.asarray(rollouts.lengths), obj.max_new_tokens, obj.overlong_cache)
            total = total + np.asarray(penalty, np.float32)
        scored = time.perf_counter()
        batch = rollout_rows([p.ids for p in rows], rollouts, total, self.cfg.data.seq_len)
        groups = total.reshape(-1, hyper.samples)
        tokens = int(rollouts.lengths.sum())
        metrics = {
            "reward": float(total.mean()),
            "reward_std": float(total.std()),
            **{f"reward/{name}": float(v.mean()) for name, v in each.items()},
            **{f"reward_std/{name}": float(v.std()) for name, v in each.items()},
            "groups_all_equal": float(np.mean(groups.max(axis=1) == groups.min(axis=1))),
            "length_mean": float(rollouts.lengths.mean()),
            "length_max": float(rollouts.lengths.max()),
            "truncated": float(1.0 - rollouts.ended.mean()),
            "wait_s": ready - start,
            "generate_s": generated - ready,
            "score_s": scored - generated,
            "rollout_tokens_per_s": tokens / max(generated - ready, 1e-9),
        }
        return batch, metrics

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        """Rewards of greedy (and, with objective.eval_samples, sampled) answers to held-out prompts."""
        prompts = self.prompts.get("eval")
        if not prompts:
            return {}
        if max_batches:
            prompts = prompts[: max_batches * self.cfg.train.batch_size]
        obj = self.cfg.objective
        sampling = Sampling(temperature=obj.temperature, top_p=obj.top_p, seed=self.cfg.train.seed)
        return evaluate_rollouts(
            self.generator(params), self.template, prompts, self.rewards, obj.max_new_tokens, obj.eval_samples, sampling
        )

    def describe(self, m: Mapping[str, float]) -> str:
        return self.objective.describe(m)

    def summary(self) -> dict[str, Any]:
        return {f"{split}_prompts": vars(stats) for split, stats in self.stats.items()}
