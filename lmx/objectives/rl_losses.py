"""Online RL from feedback, the math alone: advantages, clipped policy losses, KL estimators, loss
aggregation, GAE and the value loss, as pure functions of arrays (float32).

Shapes: rewards of ``P`` prompts with ``G`` samples each are ``[P, G]``; per-token quantities of a
batch of ``B`` completions are ``[B, T]`` with a 0/1 ``mask`` over the completion's tokens. Each
function cites the formula it implements; tests/test_rl_losses.py checks each against an
independent NumPy implementation.

Aggregations return ``(numerator, denominator)`` sums, so that a pmap-style step can psum both over
the data axis and divide once: the global value, however the completions are sharded.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array

Estimator = Literal["grpo", "dr_grpo", "rloo"]
KLEstimator = Literal["k1", "k3"]
Aggregation = Literal["sequence_mean", "token_mean", "constant"]


def group_advantages(rewards_PxG: Array, estimator: Estimator, eps: float = 1e-6) -> Array:
    """Outcome advantages of G samples per prompt, the same for every token of a sample.

    - ``grpo`` (Shao et al. 2024, DeepSeekMath, eq. 3 / section 4.1.2): ``(r - mean r) / (std r + eps)``
      over the group, with the population standard deviation;
    - ``dr_grpo`` (Liu et al. 2025, "Understanding R1-Zero-Like Training", Dr. GRPO): ``r - mean r``,
      no division by the standard deviation (it up-weights groups that are nearly solved or failed);
    - ``rloo`` (Ahmadian et al. 2024, "Back to Basics", eq. 9 / Kool et al. 2019): ``r_i`` minus the
      mean of the other G - 1 rewards, i.e. ``G / (G - 1) * (r_i - mean r)``.
    """
    rewards_PxG = rewards_PxG.astype(jnp.float32)
    centred_PxG = rewards_PxG - jnp.mean(rewards_PxG, axis=1, keepdims=True)
    if estimator == "grpo":
        return centred_PxG / (jnp.std(rewards_PxG, axis=1, keepdims=True) + eps)
    if estimator == "dr_grpo":
        return centred_PxG
    if estimator == "rloo":
        g = rewards_PxG.shape[1]
        if g < 2:
            raise ValueError("RLOO needs at least 2 samples per prompt")
        return centred_PxG * (g / (g - 1))
    raise ValueError(f"unknown advantage estimator {estimator!r}")


def clipped_policy_loss(
    logp_BxT: Array, old_logp_BxT: Array, advantages_BxT: Array, eps_low: float, eps_high: float
) -> tuple[Array, Array, Array]:
    """PPO's clipped surrogate per token (Schulman et al. 2017, eq. 7), with DAPO's decoupled
    clip range (Yu et al. 2025, "clip-higher": ``eps_high > eps_low``):
    ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)`` with ``rho = exp(logp - old_logp)``.

    Returns ``(loss [B, T], ratio [B, T], clipped [B, T])``; ``clipped`` marks the tokens whose
    clipped term was the smaller one (no gradient flows through them).
    """
    ratio_BxT = jnp.exp(logp_BxT - old_logp_BxT)
    unclipped = ratio_BxT * advantages_BxT
    clipped_ratio = jnp.clip(ratio_BxT, 1.0 - eps_low, 1.0 + eps_high)
    clipped = clipped_ratio * advantages_BxT
    return -jnp.minimum(unclipped, clipped), ratio_BxT, (clipped < unclipped).astype(jnp.float32)


def kl_estimate(logp_BxT: Array, ref_logp_BxT: Array, estimator: KLEstimator) -> Array:
    """Per-token estimates of KL(pi || pi_ref) from tokens sampled from pi (Schulman 2020,
    "Approximating KL divergence"): ``k1 = log pi - log pi_ref`` (unbiased, high variance, can be
    negative) or ``k3 = pi_ref / pi - log(pi_ref / pi) - 1`` (unbiased, low variance, never negative;
    GRPO's choice, DeepSeekMath eq. 4)."""
    log_ratio_BxT = ref_logp_BxT - logp_BxT  # log(pi_ref / pi)
    if estimator == "k1":
        return -log_ratio_BxT
    if estimator == "k3":
        return jnp.exp(log_ratio_BxT) - log_ratio_BxT - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}")


def aggregate_sums(loss_BxT: Array, mask_BxT: Array, how: Aggregation, max_len: int = 0) -> tuple[Array, Array]:
    """``(numerator, denominator)`` of a per-token loss over a batch; their global ratio is:

    - ``sequence_mean``: each completion's token mean, averaged over completions (GRPO as
      DeepSeekMath writes it: ``1/G sum_i 1/|o_i| sum_t``);
    - ``token_mean``: one mean over every token of the batch (DAPO's token-level loss, eq. 8);
    - ``constant``: token sums divided by ``max_len`` per completion (Dr. GRPO: no length bias).
    """
    mask_BxT = mask_BxT.astype(jnp.float32)
    per_token = loss_BxT * mask_BxT
    completions = jnp.asarray(loss_BxT.shape[0], jnp.float32)
    if how == "sequence_mean":
        lengths_B = jnp.maximum(jnp.sum(mask_BxT, axis=1), 1.0)
        return jnp.sum(jnp.sum(per_token, axis=1) / lengths_B), completions
    if how == "token_mean":
        return jnp.sum(per_token), jnp.sum(mask_BxT)
    if how == "constant":
        if max_len <= 0:
            raise ValueError("the constant aggregation needs max_len (the maximum completion length)")
        return jnp.sum(per_token), completions * max_len
    raise ValueError(f"unknown aggregation {how!r}")


def overlong_penalty(lengths_B: Array, max_len: int, cache: int) -> Array:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the reward: 0 up to
    ``max_len - cache`` tokens, then falling linearly to -1 at ``max_len``, and -1 beyond."""
    lengths_B = lengths_B.astype(jnp.float32)
    start = max_len - cache
    ramp = (start - lengths_B) / cache
    return jnp.where(lengths_B <= start, 0.0, jnp.where(lengths_B <= max_len, ramp, -1.0))


def ppo_token_rewards(score_B: Array, kl_BxT: Array, mask_BxT: Array, beta: float) -> Array:
    """Per-token rewards of RLHF's PPO (Ziegler et al. 2019; Ouyang et al. 2022, eq. 2):
    ``-beta * KL_t`` on every completion token, plus the reward model's score on the last one."""
    mask_BxT = mask_BxT.astype(jnp.float32)
    last_BxT = _last_token(mask_BxT)
    return (-beta * kl_BxT + score_B[:, None] * last_BxT) * mask_BxT


def _last_token(mask_BxT: Array) -> Array:
    """1 at each row's last masked token (completions are contiguous), else 0."""
    after_BxT = jnp.concatenate([mask_BxT[:, 1:], jnp.zeros_like(mask_BxT[:, :1])], axis=1)
    return mask_BxT * (1.0 - after_BxT)


def gae(rewards_BxT: Array, values_BxT: Array, mask_BxT: Array, gamma: float, lam: float) -> tuple[Array, Array]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) by a reverse scan over time:
    ``delta_t = r_t + gamma V_{t+1} - V_t``, ``A_t = delta_t + gamma lam A_{t+1}``, with
    ``V = 0`` after a completion's last token. Returns ``(advantages, returns = A + V)``, zero off
    the mask."""
    mask_BxT = mask_BxT.astype(jnp.float32)
    values_BxT = values_BxT * mask_BxT
    next_values_BxT = jnp.concatenate([values_BxT[:, 1:], jnp.zeros_like(values_BxT[:, :1])], axis=1)
    deltas_BxT = (rewards_BxT + gamma * next_values_BxT - values_BxT) * mask_BxT

    def step(carry_B: Array, inputs: tuple[Array, Array]) -> tuple[Array, Array]:
        delta_B, m_B = inputs
        advantage_B = delta_B + gamma * lam * carry_B * m_B
        return advantage_B, advantage_B

    _, advantages_TxB = jax.lax.scan(step, jnp.zeros_like(deltas_BxT[:, 0]), (deltas_BxT.T, mask_BxT.T), reverse=True)
    advantages_BxT = advantages_TxB.T * mask_BxT
    return advantages_BxT, (advantages_BxT + values_BxT) * mask_BxT


def whiten(x_BxT: Array, mask_BxT: Array, eps: float = 1e-8) -> Array:
    """Zero mean and unit variance over the masked entries (PPO's advantage normalisation)."""
    mask_BxT = mask_BxT.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask_BxT), 1.0)
    mean = jnp.sum(x_BxT * mask_BxT) / count
    var = jnp.sum(jnp.square(x_BxT - mean) * mask_BxT) / count
    return (x_BxT - mean) * jax.lax.rsqrt(var + eps) * mask_BxT


def clipped_value_loss(values_BxT: Array, old_values_BxT: Array, returns_BxT: Array, clip: float) -> Array:
    """PPO's clipped value loss per token (as in OpenAI's baselines ppo2 and Ouyang et al.'s setup):
    ``0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)``."""
    clipped_BxT = old_values_BxT + jnp.clip(values_BxT - old_values_BxT, -clip, clip)
    return 0.5 * jnp.maximum(jnp.square(values_BxT - returns_BxT), jnp.square(clipped_BxT - returns_BxT))


def explained_variance(values_BxT: Array, returns_BxT: Array, mask_BxT: Array) -> Array:
    """``1 - Var[R - V] / Var[R]`` over the masked tokens: how much of the returns the value head
    predicts (1 perfect, 0 no better than their mean)."""
    mask_BxT = mask_BxT.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask_BxT), 1.0)

    def variance(x: Array) -> Array:
        mean = jnp.sum(x * mask_BxT) / count
        return jnp.sum(jnp.square(x - mean) * mask_BxT) / count

    return 1.0 - variance(returns_BxT - values_BxT) / jnp.maximum(variance(returns_BxT), 1e-12)
