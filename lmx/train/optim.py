"""The optimizer from config: AdamW, global-norm clipping, warmup + cosine or warmup-stable-decay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import optax

from lmx.config import OptimConfig
from lmx.model.parametrization import OptimizerFactors, factor_groups, path_key

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


def _adamw(cfg: OptimConfig, schedule: optax.Schedule, factors: OptimizerFactors) -> optax.GradientTransformation:
    def learning_rate(step: Any) -> Any:
        return schedule(step) * factors.learning_rate

    return optax.adamw(
        schedule if factors.learning_rate == 1.0 else learning_rate,
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps * factors.eps,
        weight_decay=cfg.weight_decay * factors.weight_decay,
        mask=weight_decay_mask,
    )


def make_optimizer(
    cfg: OptimConfig, schedule: optax.Schedule, factors: Mapping[str, OptimizerFactors] | None = None
) -> optax.GradientTransformation:
    """Clip by global norm (if grad_clip > 0), then AdamW with decay masked off norms and biases.

    `factors` (lmx.model.parametrization.parameter_factors: by parameter path) scale each parameter's
    learning rate, weight decay and epsilon: one AdamW per distinct set of factors, through
    `optax.multi_transform`; the clipping stays global.
    """
    if factors is None:
        adamw = _adamw(cfg, schedule, OptimizerFactors())
    else:
        labels = factor_groups(factors)

        def label_tree(params: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda path, _: labels[factors[path_key(path)]],
                params,
                is_leaf=lambda x: isinstance(x, nn.Partitioned),
            )

        adamw = optax.multi_transform({label: _adamw(cfg, schedule, f) for f, label in labels.items()}, label_tree)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
