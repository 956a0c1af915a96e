"""Scaling-law fits with bootstrap confidence intervals.

- `fit_power_law`: L(C) = E + a C^(-b), E optional, on the compute frontier.
- `fit_isoflop` (Hoffmann et al. 2022, approach 2): per budget, a parabola of loss in log N (and
  in log D) whose minimum is N_opt(C) (D_opt(C)); then power laws N_opt = k C^a, D_opt = k' C^b.
- `fit_parametric` (approach 3): L(N, D) = E + A/N^alpha + B/D^beta, fitted as Hoffmann et al. do:
  on log-loss, log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e,
  minimising the Huber loss (delta 1e-3) summed over points with L-BFGS-B from a grid of
  initialisations. It implies the compute-optimal allocation under C = k N D:
  N_opt = G (C/k)^(beta/(alpha+beta)), D_opt = (C/k) / N_opt, G = (alpha A / (beta B))^(1/(alpha+beta)).
Bootstrap intervals and the `lmx fit` entry point are in `lmx.scaling.bootstrap`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from lmx.errors import FitError
from lmx.scaling.points import Points

# --------------------------------------------------------------------------------------------------
# L(C) = E + a C^-b


def fit_power_law(points: Points, with_E: bool = True) -> dict[str, float]:
    """Fits the frontier: per distinct budget (IsoFLOP group) its lowest loss, against its C.

    Fitted in log space (squared error of log L). Without E it is a straight line in log-log.
    """
    if points.C is None:
        raise FitError(f"{points.source}: a power law in compute needs C (a C column, or runs with FLOPs)")
    C, L = _frontier(points)
    need = 3 if with_E else 2
    if len(C) < need:
        raise FitError(f"{points.source}: L(C) with{'' if with_E else 'out'} E needs >= {need} budgets, got {len(C)}")
    scale = float(np.exp(np.mean(np.log(C))))  # conditions the fit: a is found for C / scale
    x = np.log(C / scale)
    slope, intercept = np.polyfit(x, np.log(L), 1)
    if not with_E:
        return {"E": 0.0, "a": float(np.exp(intercept) * scale ** (-slope)), "b": float(-slope)}

    def residuals(theta: np.ndarray) -> np.ndarray:
        E, log_a, b = theta
        return np.log(E + np.exp(log_a - b * x)) - np.log(L)

    start = np.array([0.5 * L.min(), np.log(L.min() * 0.5), max(-slope, 1e-3) * 2])
    result = optimize.least_squares(residuals, start, bounds=([0.0, -50.0, 0.0], [L.min(), 50.0, 10.0]))
    E, log_a, b = result.x
    return {"E": float(E), "a": float(np.exp(log_a) * scale**b), "b": float(b)}


def _frontier(points: Points) -> tuple[np.ndarray, np.ndarray]:
    C, L = [], []
    for _, index in sorted(points.groups().items()):
        best = index[np.argmin(points.loss[index])]
        C.append(points.C[best])
        L.append(points.loss[best])
    return np.asarray(C), np.asarray(L)


# --------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles


def isoflop_minima(points: Points) -> list[dict[str, Any]]:
    """Per budget: the parabola minima in log N and log D, and whether they lie inside the sampled
    range (outside, the minimum is an extrapolation and the budget's ladder should be widened)."""
    groups = points.groups()
    minima = []
    for budget, index in sorted(groups.items()):
        if len(np.unique(points.N[index])) < 3:
            raise FitError(
                f"{points.source}: budget {budget:.3g} has {len(np.unique(points.N[index]))} model sizes; "
                "an IsoFLOP parabola needs >= 3"
            )
        n_opt, n_inside = _parabola_minimum(np.log(points.N[index]), points.loss[index], budget, "N", points.source)
        d_opt, d_inside = _parabola_minimum(np.log(points.D[index]), points.loss[index], budget, "D", points.source)
        C = float(np.mean(points.C[index])) if points.C is not None else budget
        minima.append(
            {
                "budget": budget,
                "C": C,
                "N_opt": float(np.exp(n_opt)),
                "D_opt": float(np.exp(d_opt)),
                "loss_min": float(points.loss[index].min()),
                "points": len(index),
                "inside": bool(n_inside and d_inside),
            }
        )
    return minima


def _parabola_minimum(x: np.ndarray, y: np.ndarray, budget: float, what: str, source: str) -> tuple[float, bool]:
    p2, p1, _ = np.polyfit(x, y, 2)
    if p2 <= 0:
        raise FitError(
            f"{source}: the IsoFLOP profile at budget {budget:.3g} is not convex in log {what} (no minimum); "
            "its model sizes do not bracket the optimum"
        )
    x_min = -p1 / (2 * p2)
    return float(x_min), bool(x.min() <= x_min <= x.max())


def fit_isoflop(points: Points) -> dict[str, Any]:
    """Approach 2: N_opt = k_N C^a and D_opt = k_D C^b by least squares in log-log."""
    minima = isoflop_minima(points)
    if len(minima) < 2:
        raise FitError(f"{points.source}: IsoFLOP analysis needs >= 2 budgets, got {len(minima)}")
    log_C = np.log([m["C"] for m in minima])
    a, log_k_n = np.polyfit(log_C, np.log([m["N_opt"] for m in minima]), 1)
    b, log_k_d = np.polyfit(log_C, np.log([m["D_opt"] for m in minima]), 1)
    return {
        "a": float(a),
        "k_N": float(np.exp(log_k_n)),
        "b": float(b),
        "k_D": float(np.exp(log_k_d)),
        "minima": minima,
    }


def isoflop_optimum(fit: dict[str, Any], C: Any) -> tuple[Any, Any]:
    """(N_opt, D_opt) of approach 2's laws at C; numpy broadcasting applies to arrays of
    parameters (bootstrap refits) and of C."""
    return fit["k_N"] * C ** fit["a"], fit["k_D"] * C ** fit["b"]


# --------------------------------------------------------------------------------------------------
# Approach 3: L(N, D) = E + A / N^alpha + B / D^beta

HUBER_DELTA = 1e-3
# Hoffmann et al. 2022, appendix D.2: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
# a, b in {0, 5, ..., 25}.
INIT_GRID = tuple(
    itertools.product(
        np.arange(0, 30, 5.0),
        np.arange(0, 30, 5.0),
        np.arange(-1, 1.5, 0.5),
        np.arange(0, 2.5, 0.5),
        np.arange(0, 2.5, 0.5),
    )
)  # (a, b, e, alpha, beta)
_BOUNDS = [(-20.0, 80.0), (-20.0, 80.0), (-10.0, 5.0), (0.0, 5.0), (0.0, 5.0)]


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of residuals `r`: quadratic within delta, linear beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_L: np.ndarray, delta: float):
    """Huber loss of log-space residuals, summed, and its gradient in (a, b, e, alpha, beta).

    Both are divided by delta^2 (the minimiser is the same). Unscaled, the objective is ~1e-4 and
    L-BFGS-B's stopping rule, a reduction below ftol * max(|f|, 1), fires while the parameters are
    still far from the optimum along the flat A-alpha and B-beta ridges.
    """
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_N, b - beta * log_D, np.full_like(log_N, e)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    r = top + np.log(total) - log_L
    weights /= total  # d LSE / d term
    scale = 1 / delta**2
    loss = scale * _huber(r, delta).sum()
    g = scale * np.clip(r, -delta, delta)  # d Huber / d r
    grad = np.array(
        [
            (g * weights[0]).sum(),
            (g * weights[1]).sum(),
            (g * weights[2]).sum(),
            -(g * weights[0] * log_N).sum(),
            -(g * weights[1] * log_D).sum(),
        ]
    )
    return loss, grad


def _objective_on_grid(grid: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_L: np.ndarray, delta: float):
    """The objective at many parameter vectors at once ([G, 5] -> [G])."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    pred = np.logaddexp(np.logaddexp(a - alpha * log_N, b - beta * log_D), e)
    return _huber(pred - log_L, delta).sum(axis=1)


def _minimise(starts: np.ndarray, log_N, log_D, log_L, delta) -> list[optimize.OptimizeResult]:
    # One BLAS thread: L-BFGS-B's tiny matrix products are ~100x slower when BLAS threads spin for
    # cores that another process (or a bootstrap worker) is using.
    with threadpool_limits(1):
        return _minimise_unlimited(starts, log_N, log_D, log_L, delta)


def _minimise_unlimited(starts: np.ndarray, log_N, log_D, log_L, delta) -> list[optimize.OptimizeResult]:
    return [
        optimize.minimize(
            _objective,
            x0,
            args=(log_N, log_D, log_L, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=_BOUNDS,
            options={"ftol": 1e-12, "gtol": 1e-9, "maxiter": 1000},
        )
        for x0 in starts
    ]


def fit_parametric(
    points: Points, delta: float = HUBER_DELTA, starts: int = 64, init: np.ndarray | None = None
) -> dict[str, Any]:
    """Approach 3. The whole grid of initialisations (`INIT_GRID`, 4,500 points) is evaluated at
    once and L-BFGS-B starts from its `starts` best points (0: from all of them); `init` ([S, 5])
    replaces the grid (the bootstrap warm-starts from the full fit's optima)."""
    if len(points) < 6:
        raise FitError(
            f"{points.source}: the parametric law has 5 parameters; fitting it needs >= 6 points, got {len(points)}"
        )
    log_N, log_D, log_L = np.log(points.N), np.log(points.D), np.log(points.loss)
    if init is None:
        grid = np.asarray(INIT_GRID)
        if starts:
            values = _objective_on_grid(grid, log_N, log_D, log_L, delta)
            grid = grid[np.argsort(values)[:starts]]
        init = grid
    results = _minimise(init, log_N, log_D, log_L, delta)
    best = min(results, key=lambda r: r.fun)
    a, b, e, alpha, beta = best.x
    fit = {
        "E": float(np.exp(e)),
        "A": float(np.exp(a)),
        "B": float(np.exp(b)),
        "alpha": float(alpha),
        "beta": float(beta),
        "objective": float(best.fun * delta**2),  # the Huber loss summed over points
        "flops_per_param_token": points.flops_per_param_token(),
        # The distinct optima found, best first: where the bootstrap starts.
        "_optima": _distinct_optima(results),
    }
    if alpha + beta > 0:
        fit["a"] = float(beta / (alpha + beta))
        fit["b"] = float(alpha / (alpha + beta))
    return fit


def _distinct_optima(results: list[optimize.OptimizeResult], keep: int = 4) -> list[list[float]]:
    optima: list[np.ndarray] = []
    for r in sorted(results, key=lambda r: r.fun):
        if all(np.abs(r.x - o).max() > 1e-2 for o in optima):
            optima.append(r.x)
        if len(optima) == keep:
            break
    return [o.tolist() for o in optima]


def parametric_allocation(fit: dict[str, Any], C: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) minimising E + A/N^alpha + B/D^beta subject to k N D = C, with numpy
    broadcasting over arrays of parameters (bootstrap refits) and of C; NaN where alpha or beta
    is not positive (no allocation exists)."""
    alpha, beta, k = (np.asarray(fit[key], np.float64) for key in ("alpha", "beta", "flops_per_param_token"))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        G = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / (alpha + beta))
        N = np.where((alpha > 0) & (beta > 0), G * (C / k) ** (beta / (alpha + beta)), np.nan)
        return N, C / k / N


def parametric_optimum(fit: dict[str, Any], C: float) -> tuple[float, float]:
    """`parametric_allocation` of one fit at one C; FitError when no allocation exists."""
    alpha, beta = fit["alpha"], fit["beta"]
    if alpha <= 0 or beta <= 0:
        raise FitError(f"the fit has alpha={alpha:.3g}, beta={beta:.3g}: no compute-optimal allocation exists")
    N, D = parametric_allocation(fit, C)
    return float(N), float(D)
