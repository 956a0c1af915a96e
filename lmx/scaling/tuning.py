"""The best learning rate of a grid: the lowest loss, refined by a parabola in log2(learning rate).

Used by the learning-rate studies in experiments/ (mup_transfer, isoflop_tuned) so that both
pick an optimum the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class LearningRateOptimum:
    """`best` is the grid point with the lowest loss. `parabola` is the minimum of the parabola in
    log2(lr) through it and its two neighbours: None when the best point is at the grid's edge (the
    optimum is not bracketed) or the three points do not curve upwards."""

    best: float
    best_loss: float
    parabola: float | None

    @property
    def bracketed(self) -> bool:
        return self.parabola is not None


def learning_rate_optimum(learning_rates: Sequence[float], losses: Sequence[float]) -> LearningRateOptimum:
    """The optimum of `losses` over `learning_rates` (any order; non-finite losses count as worst)."""
    if len(learning_rates) != len(losses) or not learning_rates:
        raise ValueError(f"{len(learning_rates)} learning rates for {len(losses)} losses")
    order = np.argsort(learning_rates)
    lrs = np.asarray(learning_rates, dtype=float)[order]
    y = np.asarray(losses, dtype=float)[order]
    y = np.where(np.isfinite(y), y, np.inf)
    i = int(np.argmin(y))
    parabola = None
    if 0 < i < len(lrs) - 1 and np.all(np.isfinite(y[i - 1 : i + 2])):
        a, b, _ = np.polyfit(np.log2(lrs[i - 1 : i + 2]), y[i - 1 : i + 2], 2)
        parabola = float(2 ** (-b / (2 * a))) if a > 0 else None
    best_loss = float(y[i]) if math.isfinite(y[i]) else float("nan")
    return LearningRateOptimum(best=float(lrs[i]), best_loss=best_loss, parabola=parabola)
