"""Preference-optimization losses as pure functions of sequence log-probabilities, in a registry.

Every loss takes a `SequenceLogps` of pairs (the summed log-probability of each response under the
policy, its token count, and, for the losses that use one, under the frozen reference model) and
returns per-pair losses and implicit rewards ``[B]``. The step sums them over the data shards.

Formulas (pairs: chosen w, rejected l; log-ratios rho_y = log pi(y) - log ref(y)):
- dpo (Rafailov et al. 2023): -log sigmoid(beta (rho_w - rho_l)); with label smoothing e
  (conservative DPO, Mitchell 2023): -(1 - e) log sigmoid(h) - e log sigmoid(-h).
- ipo (Azar et al. 2023): (rho_w - rho_l - 1 / (2 tau))^2, tau = beta.
- simpo (Meng et al. 2024): -log sigmoid(beta log pi(w) / |w| - beta log pi(l) / |l| - gamma),
  no reference model.
- orpo (Hong et al. 2024): NLL(w) / |w| - lambda log sigmoid(log odds(w) - log odds(l)),
  odds(y) = p / (1 - p) with p = exp(log pi(y) / |y|) (their length-normalised probability),
  lambda = beta; no reference model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


@flax.struct.dataclass
class SequenceLogps:
    chosen: Array  # [B] summed log pi(chosen response)
    rejected: Array  # [B]
    chosen_tokens: Array  # [B] response tokens (float)
    rejected_tokens: Array  # [B]
    ref_chosen: Array | None = None  # [B] summed log ref(chosen response)
    ref_rejected: Array | None = None


@dataclasses.dataclass(frozen=True)
class PreferenceHyper:
    beta: float = 0.1
    label_smoothing: float = 0.0  # dpo only: conservative DPO when > 0
    gamma: float = 0.5  # simpo's target margin


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
    """A registered loss: ``(logps, hyper) -> (loss [B], chosen reward [B], rejected reward [B])``,
    and whether it needs the reference model's log-probs."""

    fn: Callable[[SequenceLogps, PreferenceHyper], tuple[Array, Array, Array]]
    needs_reference: bool

    def __call__(self, lp: SequenceLogps, hp: PreferenceHyper) -> tuple[Array, Array, Array]:
        return self.fn(lp, hp)


def _log_ratios(lp: SequenceLogps) -> tuple[Array, Array]:
    if lp.ref_chosen is None or lp.ref_rejected is None:
        raise ValueError("this loss needs reference log-probabilities")
    return lp.chosen - lp.ref_chosen, lp.rejected - lp.ref_rejected


def dpo(lp: SequenceLogps, hp: PreferenceHyper) -> tuple[Array, Array, Array]:
    rho_w, rho_l = _log_ratios(lp)
    h = hp.beta * (rho_w - rho_l)
    e = hp.label_smoothing
    loss = -(1 - e) * jax.nn.log_sigmoid(h) - e * jax.nn.log_sigmoid(-h)
    return loss, hp.beta * rho_w, hp.beta * rho_l


def ipo(lp: SequenceLogps, hp: PreferenceHyper) -> tuple[Array, Array, Array]:
    rho_w, rho_l = _log_ratios(lp)
    loss = jnp.square(rho_w - rho_l - 1.0 / (2.0 * hp.beta))
    return loss, hp.beta * rho_w, hp.beta * rho_l


def simpo(lp: SequenceLogps, hp: PreferenceHyper) -> tuple[Array, Array, Array]:
    reward_w = hp.beta * lp.chosen / jnp.maximum(lp.chosen_tokens, 1.0)
    reward_l = hp.beta * lp.rejected / jnp.maximum(lp.rejected_tokens, 1.0)
    return -jax.nn.log_sigmoid(reward_w - reward_l - hp.gamma), reward_w, reward_l


def _log_odds(mean_logp: Array) -> Array:
    # log(p / (1 - p)) with p = exp(mean_logp) < 1; -expm1 keeps 1 - p accurate near p = 1.
    mean_logp = jnp.minimum(mean_logp, -1e-7)
    return mean_logp - jnp.log(-jnp.expm1(mean_logp))


def orpo(lp: SequenceLogps, hp: PreferenceHyper) -> tuple[Array, Array, Array]:
    mean_w = lp.chosen / jnp.maximum(lp.chosen_tokens, 1.0)
    mean_l = lp.rejected / jnp.maximum(lp.rejected_tokens, 1.0)
    odds_ratio_loss = -jax.nn.log_sigmoid(_log_odds(mean_w) - _log_odds(mean_l))
    return -mean_w + hp.beta * odds_ratio_loss, hp.beta * mean_w, hp.beta * mean_l


# objective.loss -> the loss; the one list of preference losses (config validation reads it too).
PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "dpo": PreferenceLoss(dpo, needs_reference=True),
    "ipo": PreferenceLoss(ipo, needs_reference=True),
    "simpo": PreferenceLoss(simpo, needs_reference=False),
    "orpo": PreferenceLoss(orpo, needs_reference=False),
}


def bradley_terry(chosen_score: Array, rejected_score: Array) -> Array:
    """Reward-model loss per pair: -log sigmoid(r(w) - r(l)) (Bradley & Terry 1952; Ouyang et al. 2022)."""
    return -jax.nn.log_sigmoid(chosen_score - rejected_score)
