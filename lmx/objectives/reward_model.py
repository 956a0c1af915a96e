"""Reward models: the Bradley-Terry loss on the scalar scores of a `RewardModel` over preference
pairs, optionally with an auxiliary next-token loss on the chosen responses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from lmx.config import Config
from lmx.config.sections import DATACLASS, fail
from lmx.model import RewardModel
from lmx.objectives.base import Array, LossFn, Objective
from lmx.objectives.chat import ChatObjectiveConfig
from lmx.objectives.losses import response_logps
from lmx.objectives.pairs import PairTask, paired_rows, whole_sequences
from lmx.objectives.preference_losses import bradley_terry
from lmx.objectives.registry import register
from lmx.parallel.mapping import Batch


@dataclasses.dataclass(**DATACLASS)
class RewardModelConfig(ChatObjectiveConfig):
    KIND: ClassVar[str] = "reward_model"
    # Weight of an auxiliary next-token loss on the chosen responses (each response's token mean,
    # averaged over pairs), which keeps the language model's features in the shared layers while the
    # scalar head trains (Yang et al. 2024, "Regularizing hidden states enables learning
    # generalizable reward model for LLMs"). 0 turns it off.
    lm_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        ChatObjectiveConfig.__post_init__(self)  # zero-argument super() fails in slotted dataclasses
        if self.lm_loss_weight < 0:
            fail("objective", "lm_loss_weight", self.lm_loss_weight, "must be >= 0")


def make_reward_model(cfg: Config) -> RewardModel:
    """The scorer, with the language model's head when ``objective.lm_loss_weight`` > 0."""
    return RewardModel(cfg.model, lm_head=cfg.objective.lm_loss_weight > 0)


def reward_model_loss(model: nn.Module, lm_loss_weight: float = 0.0) -> LossFn:
    """Bradley-Terry over preference batches scored by a `RewardModel`. Stats: accuracy (chosen
    scored higher), margin, chosen_score, rejected_score.

    Each side is scored on its whole sequence (`whole_sequences`), so the score is read at its EOS.
    With `lm_loss_weight` > 0 (the model built with ``lm_head``), each pair also adds that weight
    times the mean next-token cross-entropy of its chosen response; stat ``lm_loss`` is that mean.
    A per-pair term keeps the loss a sum over pairs, so the step's global mean stays exact.
    """

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        rows = paired_rows(batch)
        # The hidden states feed only the LM term; without it XLA drops them. They are causal, so
        # at the input positions they are the language model's, EOS appended or not.
        scores_2B, h_2BxLxD = model.apply({"params": params}, *whole_sequences(rows), method="scores_and_hidden")
        b = scores_2B.shape[0] // 2
        chosen_B, rejected_B = scores_2B[:b], scores_2B[b:]
        valid_B = ((jnp.sum(batch["chosen_loss_mask"], 1) > 0) & (jnp.sum(batch["rejected_loss_mask"], 1) > 0)).astype(
            jnp.float32
        )
        losses_B = bradley_terry(chosen_B, rejected_B)
        stats = {
            "accuracy": jnp.sum((chosen_B > rejected_B) * valid_B),
            "margin": jnp.sum((chosen_B - rejected_B) * valid_B),
            "chosen_score": jnp.sum(chosen_B * valid_B),
            "rejected_score": jnp.sum(rejected_B * valid_B),
            "weight": jnp.sum(valid_B),
        }
        if lm_loss_weight:
            # Only the chosen rows: the rejected responses are wrong answers, not text to imitate.
            logits_BxLxV = model.apply({"params": params}, h_2BxLxD[:b], method="logits")
            logp_B, tokens_B = response_logps(logits_BxLxV, batch["chosen_targets"], batch["chosen_loss_mask"])
            lm_B = -logp_B / jnp.maximum(tokens_B, 1.0)
            losses_B = losses_B + lm_loss_weight * lm_B
            stats["lm_loss"] = jnp.sum(lm_B * valid_B)
        return jnp.sum(losses_B * valid_B), stats

    return loss_fn


def describe_reward_model_metrics(m: Mapping[str, float]) -> str:
    if not m:
        return "no held-out data (objective.eval_files)"
    return (
        f"held-out loss {m['loss']:.4f}, pairwise accuracy {m['accuracy']:.3f}, margin {m['margin']:.3f} "
        f"over {int(m['pairs'])} pairs"
    )


REWARD_MODEL = register(
    Objective(
        config_class=RewardModelConfig,
        make_loss=lambda model, cfg: reward_model_loss(model, cfg.objective.lm_loss_weight),
        make_task=lambda cfg, mesh, model, reference, log: PairTask(cfg, mesh, model, REWARD_MODEL, reference, log),
        describe=describe_reward_model_metrics,
        make_model=make_reward_model,
        generates=False,
        scores_pairs=True,
        reads_whole_sequences=True,
    )
)
