"""The learning-rate optimum the transfer and tuning studies use (lmx.scaling.tuning)."""

import math

import numpy as np
import pytest

from lmx.scaling.tuning import learning_rate_optimum


def test_parabola_recovers_the_vertex_of_a_loss_quadratic_in_log2_lr():
    lrs = [2.0**k for k in range(-10, -4)]
    vertex = -7.3  # between grid points 2^-8 and 2^-7
    losses = [2.5 + 0.2 * (math.log2(lr) - vertex) ** 2 for lr in lrs]
    optimum = learning_rate_optimum(lrs[::-1], losses[::-1])  # order does not matter
    assert optimum.best == 2.0**-7 and optimum.bracketed
    assert optimum.parabola == pytest.approx(2.0**vertex, rel=1e-9)
    assert optimum.best_loss == pytest.approx(min(losses))


def test_an_optimum_at_the_grid_edge_is_not_bracketed():
    optimum = learning_rate_optimum([1e-3, 2e-3, 4e-3], [3.0, 2.9, 2.8])
    assert optimum.best == 4e-3 and optimum.parabola is None and not optimum.bracketed


def test_diverged_runs_count_as_worst_and_block_a_parabola_through_them():
    optimum = learning_rate_optimum([1e-3, 2e-3, 4e-3, 8e-3], [3.0, 2.7, 2.6, np.nan])
    assert optimum.best == 4e-3 and optimum.parabola is None
    assert math.isnan(learning_rate_optimum([1e-3, 2e-3], [np.nan, np.inf]).best_loss)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 learning rates for 1 losses"):
        learning_rate_optimum([1e-3, 2e-3], [1.0])
