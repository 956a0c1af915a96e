"""Preference optimisation: a loss of the DPO family (`lmx.objectives.preference_losses`) on the
summed log-probs of the chosen and rejected responses. Reference log-probs come from the frozen
init_from parameters (the step's third argument) or from the batch (``ref_chosen``/``ref_rejected``,
precomputed once over the data)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import Config
from lmx.config.sections import DATACLASS, fail
from lmx.errors import ConfigError
from lmx.objectives.base import Array, LossFn, Objective, Reference
from lmx.objectives.chat import ChatObjectiveConfig
from lmx.objectives.pairs import PairTask, pair_logps
from lmx.objectives.preference_losses import PREFERENCE_LOSSES, PreferenceHyper, SequenceLogps
from lmx.objectives.registry import register
from lmx.parallel.mapping import Batch


@dataclasses.dataclass(**DATACLASS)
class PreferenceConfig(ChatObjectiveConfig):
    KIND: ClassVar[str] = "preference"
    loss: str = "dpo"  # a key of PREFERENCE_LOSSES
    beta: float = 0.1
    label_smoothing: float = 0.0  # dpo: conservative DPO when > 0
    gamma: float = 0.5  # simpo's target margin
    # Reference log-probs: from the frozen init_from parameters inside every step, or once over the
    # dataset before training (stored beside it).
    reference: Literal["in_step", "precomputed"] = "in_step"

    def __post_init__(self) -> None:
        ChatObjectiveConfig.__post_init__(self)  # zero-argument super() fails in slotted dataclasses
        if self.loss not in PREFERENCE_LOSSES:
            raise ConfigError(f"objective.loss={self.loss!r}: expected one of {list(PREFERENCE_LOSSES)}")
        if not self.beta > 0:
            fail("objective", "beta", self.beta, "must be positive")
        if not 0.0 <= self.label_smoothing < 0.5:
            fail("objective", "label_smoothing", self.label_smoothing, "must lie in [0, 0.5)")
        if self.gamma < 0:
            fail("objective", "gamma", self.gamma, "must be >= 0")
        if PREFERENCE_LOSSES[self.loss].needs_reference and not self.init_from:
            fail("objective", "init_from", self.init_from, f"objective.loss={self.loss!r} needs a reference model")


def preference_loss(model: nn.Module, loss: str, hyper: PreferenceHyper) -> LossFn:
    """A DPO-family loss over preference batches (lmx.data.preference); lmx.objectives.preference_losses.

    Stats (means over pairs after the step divides by the pair count): reward_accuracy,
    chosen_reward, rejected_reward, margin, and, with a reference, the policy-reference log-prob
    gaps chosen_logp_gap and rejected_logp_gap (summed over each response's tokens).
    """
    loss_of = PREFERENCE_LOSSES[loss]

    def loss_fn(params: Any, batch: Batch, frozen: Any = None) -> tuple[Array, dict[str, Array]]:
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, params, batch)
        ref_chosen = ref_rejected = None
        if frozen is not None:
            ref_chosen, ref_rejected, _, _ = pair_logps(model, jax.lax.stop_gradient(frozen), batch)
        elif "ref_chosen" in batch:
            ref_chosen, ref_rejected = batch["ref_chosen"], batch["ref_rejected"]
        elif loss_of.needs_reference:
            raise ValueError(f"preference loss {loss!r} needs reference log-probs: frozen params or ref_* in the batch")
        logps = SequenceLogps(chosen, rejected, chosen_tokens, rejected_tokens, ref_chosen, ref_rejected)
        losses_B, reward_w_B, reward_l_B = loss_of(logps, hyper)
        valid_B = ((chosen_tokens > 0) & (rejected_tokens > 0)).astype(jnp.float32)
        stats = {
            "reward_accuracy": jnp.sum((reward_w_B > reward_l_B) * valid_B),
            "chosen_reward": jnp.sum(reward_w_B * valid_B),
            "rejected_reward": jnp.sum(reward_l_B * valid_B),
            "margin": jnp.sum((reward_w_B - reward_l_B) * valid_B),
            "weight": jnp.sum(valid_B),
        }
        if ref_chosen is not None:
            stats["chosen_logp_gap"] = jnp.sum((chosen - ref_chosen) * valid_B)
            stats["rejected_logp_gap"] = jnp.sum((rejected - ref_rejected) * valid_B)
        return jnp.sum(losses_B * valid_B), stats

    return loss_fn


def preference_reference(cfg: Config) -> Reference:
    obj = cfg.objective
    return obj.reference if PREFERENCE_LOSSES[obj.loss].needs_reference else "none"


def describe_preference_metrics(m: Mapping[str, float]) -> str:
    if not m:
        return "no held-out data (objective.eval_files)"
    return (
        f"held-out loss {m['loss']:.4f}, reward accuracy {m['reward_accuracy']:.3f}, "
        f"margin {m['margin']:.3f} over {int(m['pairs'])} pairs"
    )


def _loss(model: nn.Module, cfg: Config) -> LossFn:
    obj = cfg.objective
    hyper = PreferenceHyper(beta=obj.beta, label_smoothing=obj.label_smoothing, gamma=obj.gamma)
    return preference_loss(model, obj.loss, hyper)


PREFERENCE = register(
    Objective(
        config_class=PreferenceConfig,
        make_loss=_loss,
        make_task=lambda cfg, mesh, model, reference, log: PairTask(cfg, mesh, model, PREFERENCE, reference, log),
        describe=describe_preference_metrics,
        reference=preference_reference,
        scores_pairs=True,
    )
)
