"""Loss functions of the post-training objectives, as pure functions of (params, batch[, frozen]).

Each returns ``(loss_sum, stats)`` with sums over the rows of its batch shard and ``stats["weight"]``
the loss's denominator, like `lmx.train.steps.pretrain_loss`, so the same pmap-style step (psum over
data shards, exact global means) trains them all. Rows whose responses are empty (the padding rows of
an evaluation batch) weigh nothing.

- ``sft``: next-token cross-entropy on response tokens only (``loss_mask``), normalised per token
  (every response token of the batch weighs the same) or per sequence (each example's mean weighs
  the same, whatever its length).
- ``preference``: a loss of the DPO family (`lmx.train.preference_losses`) on the summed log-probs of
  the chosen and rejected responses, the two run through the model as one batch. Reference
  log-probs come from frozen parameters (the step's third argument) or from the batch
  (``ref_chosen``/``ref_rejected``, precomputed).
- ``reward_model``: the Bradley-Terry loss on the scalar scores of a `RewardModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import Config, ObjectiveConfig
from lmx.train.losses import cross_entropy_sums, target_logits
from lmx.train.preference_losses import (
    NEEDS_REFERENCE,
    PREFERENCE_LOSSES,
    PreferenceHyper,
    SequenceLogps,
    bradley_terry,
)
from lmx.train.steps import Batch, LossFn, pretrain_loss

Array = jax.Array
SIDES = ("chosen", "rejected")


def sft_loss(model: nn.Module, normalize: str = "token", z_loss: float = 0.0) -> LossFn:
    """Response-only cross-entropy over SFT batches (lmx.data.sft): per token or per sequence."""

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        weights_BxL = batch["loss_mask"].astype(jnp.float32)
        if normalize == "sequence":
            # Each row's tokens share a weight of 1 in total: the weight sum counts sequences.
            tokens_B = jnp.sum(weights_BxL, axis=1, keepdims=True)
            weights_BxL = weights_BxL / jnp.maximum(tokens_B, 1.0)
        return cross_entropy_sums(logits, batch["targets"], weights_BxL, z_loss)

    return loss_fn


def response_logps(logits_BxLxV: Array, targets_BxL: Array, mask_BxL: Array) -> tuple[Array, Array]:
    """``(summed log-prob of the masked targets [B], their count [B])``, in float32."""
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    logp_BxL = target_logits(logits_BxLxV, targets_BxL) - jax.nn.logsumexp(logits_BxLxV, axis=-1)
    mask_BxL = mask_BxL.astype(jnp.float32)
    return jnp.sum(logp_BxL * mask_BxL, axis=1), jnp.sum(mask_BxL, axis=1)


def paired_rows(batch: Batch) -> dict[str, Array]:
    """Chosen rows then rejected rows as one batch ``[2B, L]`` (one forward pass for both)."""
    keys = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
    return {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys}


def whole_sequences(rows: dict[str, Array]) -> tuple[Array, Array, Array]:
    """``(tokens, segment_ids, positions)`` ``[B, L]`` of each row's whole sequence: prompt,
    response and EOS.

    Rows hold a language model's layout, inputs = tokens[:-1] and targets = tokens[1:], which leaves
    out the last token. A reward model reads that one too (EOS: the response is complete), so it is
    put back after the inputs; there is room for it because reward-model data is read with
    sequences of at most ``seq_len`` tokens (`max_sequence_tokens`).
    """
    inputs_BxL, segments_BxL = rows["inputs"], rows["segment_ids"]
    n_B = jnp.sum(segments_BxL > 0, axis=1)
    index_1xL = jnp.arange(inputs_BxL.shape[1])[None, :]
    # Masked sums and selects rather than gathers: they partition cleanly when the batch is sharded.
    last_B = jnp.sum(jnp.where(index_1xL == n_B[:, None] - 1, rows["targets"], 0), axis=1)
    at_end_BxL = index_1xL == n_B[:, None]
    tokens_BxL = jnp.where(at_end_BxL, last_B[:, None], inputs_BxL)
    segment_ids_BxL = jnp.where(at_end_BxL, jnp.ones_like(segments_BxL), segments_BxL)
    return tokens_BxL, segment_ids_BxL, rows["positions"]


def max_sequence_tokens(cfg: Config) -> int:
    """The most tokens a chat example (prompt + response) may hold under `cfg`'s objective:
    ``seq_len + 1`` for a language model's rows (n tokens make n - 1 predictions), ``seq_len`` for a
    reward model, which reads every token (`whole_sequences`)."""
    return cfg.data.seq_len + (cfg.objective.kind != "reward_model")


def pair_logps(model: nn.Module, params: Any, batch: Batch) -> tuple[Array, Array, Array, Array]:
    """``(logp chosen, logp rejected, tokens chosen, tokens rejected)``, each ``[B]``."""
    rows = paired_rows(batch)
    logits = model.apply({"params": params}, rows["inputs"], rows["segment_ids"], rows["positions"])
    logps_2B, tokens_2B = response_logps(logits, rows["targets"], rows["loss_mask"])
    b = logps_2B.shape[0] // 2
    return logps_2B[:b], logps_2B[b:], tokens_2B[:b], tokens_2B[b:]


def preference_loss(model: nn.Module, loss: str, hyper: PreferenceHyper) -> LossFn:
    """A DPO-family loss over preference batches (lmx.data.preference); see the module docstring.

    Stats (means over pairs after the step divides by the pair count): reward_accuracy,
    chosen_reward, rejected_reward, margin, and, with a reference, the policy-reference log-prob
    gaps chosen_logp_gap and rejected_logp_gap (summed over each response's tokens).
    """
    loss_of = PREFERENCE_LOSSES[loss]
    needs_reference = NEEDS_REFERENCE[loss]

    def loss_fn(params: Any, batch: Batch, frozen: Any = None) -> tuple[Array, dict[str, Array]]:
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(model, params, batch)
        ref_chosen = ref_rejected = None
        if frozen is not None:
            ref_chosen, ref_rejected, _, _ = pair_logps(model, jax.lax.stop_gradient(frozen), batch)
        elif "ref_chosen" in batch:
            ref_chosen, ref_rejected = batch["ref_chosen"], batch["ref_rejected"]
        elif needs_reference:
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


def hyper_from_config(objective: ObjectiveConfig) -> PreferenceHyper:
    return PreferenceHyper(beta=objective.beta, label_smoothing=objective.label_smoothing, gamma=objective.gamma)


# objective.kind -> (model, config) -> loss function
OBJECTIVES: dict[str, Callable[[nn.Module, Config], LossFn]] = {
    "pretrain": lambda model, cfg: pretrain_loss(model, cfg.train.z_loss),
    "sft": lambda model, cfg: sft_loss(model, cfg.objective.normalize, cfg.train.z_loss),
    "preference": lambda model, cfg: preference_loss(model, cfg.objective.loss, hyper_from_config(cfg.objective)),
    "reward_model": lambda model, cfg: reward_model_loss(model, cfg.objective.lm_loss_weight),
}


def uses_frozen_reference(objective: ObjectiveConfig) -> bool:
    """Whether the step takes the reference parameters as a frozen third argument."""
    return objective.kind == "preference" and NEEDS_REFERENCE[objective.loss] and objective.reference == "in_step"
