"""Scaling-law fits with bootstrap confidence intervals.

- `fit_power_law`: L(C) = E + a C^(-b), E optional, on the compute frontier.
- `fit_isoflop` (Hoffmann et al. 2022, approach 2): per budget, a parabola of loss in log N (and
  in log D) whose minimum is N_opt(C) (D_opt(C)); then power laws N_opt = k C^a, D_opt = k' C^b.
- `fit_parametric` (approach 3): L(N, D) = E + A/N^alpha + B/D^beta, fitted as Hoffmann et al. do:
  on log-loss, log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e,
  minimising the Huber loss (delta 1e-3) summed over points with L-BFGS-B from a grid of
  initialisations. It implies the compute-optimal allocation under C = k N D:
  N_opt = G (C/k)^(beta/(alpha+beta)), D_opt = (C/k) / N_opt, G = (alpha A / (beta B))^(1/(alpha+beta)).
- `bootstrap`: resamples the points with replacement, refits, and reports percentile intervals of
  every parameter and of N_opt and D_opt at a budget. IsoFLOP fits resample within each budget.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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


def isoflop_optimum(fit: dict[str, Any], C: float) -> tuple[float, float]:
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
    small = np.abs(r) <= delta
    scale = 1 / delta**2
    loss = scale * np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
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
    r = np.abs(pred - log_L)
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)).sum(axis=1)


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


def parametric_optimum(fit: dict[str, Any], C: float) -> tuple[float, float]:
    """(N_opt, D_opt) minimising E + A/N^alpha + B/D^beta subject to k N D = C."""
    alpha, beta, k = fit["alpha"], fit["beta"], fit["flops_per_param_token"]
    if alpha <= 0 or beta <= 0:
        raise FitError(f"the fit has alpha={alpha:.3g}, beta={beta:.3g}: no compute-optimal allocation exists")
    G = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / (alpha + beta))
    N = G * (C / k) ** (beta / (alpha + beta))
    return float(N), float(C / k / N)


# --------------------------------------------------------------------------------------------------
# Bootstrap


@dataclasses.dataclass(frozen=True)
class Approach:
    name: str
    fit: Callable[..., dict[str, Any]]
    params: tuple[str, ...]  # reported with intervals
    optimum: Callable[[dict[str, Any], float], tuple[float, float]] | None
    min_points: int


APPROACHES = {
    "power": Approach("power", fit_power_law, ("E", "a", "b"), None, 3),
    "2": Approach("2", fit_isoflop, ("a", "b", "k_N", "k_D"), isoflop_optimum, 6),
    "3": Approach("3", fit_parametric, ("E", "A", "B", "alpha", "beta", "a", "b"), parametric_optimum, 6),
}


def resample_indices(points: Points, approach: str, rng: np.random.Generator) -> np.ndarray:
    """Indices of one bootstrap resample: with replacement over all points, or within each
    IsoFLOP group for the approaches that fit per budget (so every budget keeps its size)."""
    if approach == "3":
        return rng.integers(0, len(points), len(points))
    return np.concatenate([rng.choice(index, len(index)) for _, index in sorted(points.groups().items())])


def _bootstrap_chunk(args: tuple) -> list[dict[str, Any] | None]:
    points, approach, seeds, budget, fit_kwargs = args
    spec = APPROACHES[approach]
    out = []
    for seed in seeds:
        sample = points.subset(resample_indices(points, approach, np.random.default_rng(seed)))
        try:
            fit = spec.fit(sample, **fit_kwargs)
            if budget is not None and spec.optimum is not None:
                fit["N_opt"], fit["D_opt"] = spec.optimum(fit, budget)
        except (FitError, np.linalg.LinAlgError, ValueError):
            out.append(None)  # a degenerate resample (e.g. a profile without a minimum)
            continue
        out.append({k: v for k, v in fit.items() if isinstance(v, float)})
    return out


def bootstrap(
    points: Points,
    approach: str,
    full_fit: dict[str, Any],
    resamples: int = 1000,
    budget: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    workers: int | None = None,
    fit_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Percentile intervals over `resamples` refits. Approach 3 warm-starts every refit from the
    full fit's distinct optima (a few L-BFGS-B runs instead of the whole grid: the bootstrap asks
    how the optimum moves, not where it is); work is split over `workers` processes (default:
    the machine's cores)."""
    fit_kwargs = dict(fit_kwargs or {})
    if approach == "3":
        fit_kwargs["init"] = np.asarray(full_fit["_optima"])
    seeds = np.random.SeedSequence(seed).generate_state(resamples).tolist()
    workers = workers or min(os.cpu_count() or 1, 8)
    chunks = [(points, approach, seeds[i::workers], budget, fit_kwargs) for i in range(workers)]
    if workers > 1 and resamples >= 50:
        # spawn, not fork: forking a process that runs JAX (or any threads) can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            fits = [f for chunk in pool.map(_bootstrap_chunk, chunks) for f in chunk]
    else:
        fits = [f for chunk in chunks for f in _bootstrap_chunk(chunk)]
    ok = [f for f in fits if f is not None]
    if len(ok) < max(10, resamples // 2):
        raise FitError(f"{points.source}: only {len(ok)} of {resamples} bootstrap refits succeeded")
    keys = list(APPROACHES[approach].params) + (["N_opt", "D_opt"] if budget is not None else [])
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for key in keys:
        values = np.array([f[key] for f in ok if key in f])
        if len(values):
            intervals[key] = [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
    return {
        "intervals": intervals,
        "resamples": resamples,
        "failed": resamples - len(ok),
        "confidence": confidence,
    }


def run_fit(
    points: Points,
    approach: str,
    resamples: int = 0,
    budget: float | None = None,
    with_E: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
    starts: int = 64,
) -> dict[str, Any]:
    """The fit of `approach` ("power", "2" or "3"), with bootstrap intervals when `resamples` > 0,
    as one JSON-ready dict. `starts`: approach 3's L-BFGS-B starts (0: the whole grid)."""
    if approach not in APPROACHES:
        raise FitError(f"unknown approach {approach!r}; expected one of {sorted(APPROACHES)}")
    spec = APPROACHES[approach]
    if len(points) < spec.min_points:
        raise FitError(f"{points.source}: approach {approach} needs >= {spec.min_points} points, got {len(points)}")
    fit_kwargs: dict[str, Any] = {"with_E": with_E} if approach == "power" else {}
    fit = spec.fit(points, **fit_kwargs, **({"starts": starts} if approach == "3" else {}))
    result: dict[str, Any] = {"approach": approach, "source": points.source, "points": len(points)}
    result.update({k: v for k, v in fit.items() if not k.startswith("_")})
    if approach == "3":
        result["huber_delta"] = HUBER_DELTA
    if budget is not None and spec.optimum is not None:
        result["budget"] = budget
        result["N_opt"], result["D_opt"] = spec.optimum(fit, budget)
    if resamples:
        result["bootstrap"] = bootstrap(
            points, approach, fit, resamples, budget, confidence, seed, fit_kwargs=fit_kwargs
        )
        result["intervals"] = result["bootstrap"].pop("intervals")
    return result


def format_fit(result: dict[str, Any]) -> str:
    """A fit result as a table: parameter, value, interval."""
    title = {"power": "L(C) = E + a C^-b", "2": "approach 2 (IsoFLOP)", "3": "approach 3, L = E + A/N^alpha + B/D^beta"}
    lines = [f"{title[result['approach']]}: {result['points']} points from {result['source']}"]
    if result["approach"] == "2":
        lines.append(f"  {'budget':>10}  {'N_opt':>10}  {'D_opt':>10}  {'min loss':>8}  runs")
        for m in result["minima"]:
            note = "" if m["inside"] else "  (extrapolated: outside the sampled sizes)"
            row = f"  {m['C']:>10.3g}  {m['N_opt']:>10.3g}  {m['D_opt']:>10.3g}  {m['loss_min']:>8.4f}"
            lines.append(f"{row}  {m['points']}{note}")
    intervals = result.get("intervals", {})
    ci = f"{100 * result['bootstrap']['confidence']:.0f}% interval" if "bootstrap" in result else ""
    lines.append(f"  {'parameter':<12}{'value':>12}  {ci}")
    keys = [k for k in APPROACHES[result["approach"]].params if k in result]
    keys += [k for k in ("N_opt", "D_opt") if k in result]
    for key in keys:
        interval = f"[{intervals[key][0]:.4g}, {intervals[key][1]:.4g}]" if key in intervals else ""
        lines.append(f"  {key:<12}{result[key]:>12.4g}  {interval}")
    if "budget" in result:
        lines.append(f"  (N_opt and D_opt at C = {result['budget']:.3g})")
    if "bootstrap" in result:
        b = result["bootstrap"]
        lines.append(f"  bootstrap: {b['resamples']} resamples, {b['failed']} degenerate and left out")
    return "\n".join(lines)
