"""The optimizer from config: AdamW, global-norm clipping, warmup + cosine or warmup-stable-decay."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import optax

from lmx.config import OptimConfig

# Only matrices decay. Norm scales and biases do not (their names are "scale" and "bias"); the
# decision is by name because under nn.scan a stacked norm scale is 2-D like a matrix.
DECAYED_PARAM_NAMES = ("kernel", "embedding")


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Learning rate by step. Warmup is linear from 0; the schedule ends at min_lr_ratio * peak."""
    peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    warmup = min(cfg.warmup_steps, total_steps)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), floor)
    if cfg.schedule == "wsd":
        # Warmup-stable-decay (Hu et al. 2024, MiniCPM): hold the peak, then decay linearly at the end.
        decay = max(1, round(cfg.decay_fraction * total_steps))
        stable = max(0, total_steps - warmup - decay)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, peak, max(warmup, 1)),
                optax.constant_schedule(peak),
                optax.linear_schedule(peak, floor, decay),
            ],
            boundaries=[warmup, warmup + stable],
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)], [warmup]
    )


def weight_decay_mask(params: Any) -> Any:
    """True for the leaves that weight decay applies to (plain or `nn.Partitioned`-boxed params)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in DECAYED_PARAM_NAMES,
        params,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )


def make_optimizer(cfg: OptimConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Clip by global norm (if grad_clip > 0), then AdamW with decay masked off norms and biases."""
    adamw = optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=weight_decay_mask
    )
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
