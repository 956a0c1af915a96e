"""Bootstrap confidence intervals for the scaling fits, and `run_fit`, which `lmx fit` calls.

A bootstrap resamples the points with replacement (within each IsoFLOP budget for the approaches
that fit per budget), refits, and reports percentile intervals of every parameter and of N_opt and
D_opt at a budget. Refits are spread over worker processes. For approaches 2 and 3 it also gives a
band: per compute C on a grid over the points' range, the interval of N_opt(C) and D_opt(C) over
the resamples' fitted allocation laws (what a plot of N_opt against C shades).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from lmx.errors import FitError
from lmx.scaling.fit import (
    HUBER_DELTA,
    fit_isoflop,
    fit_parametric,
    fit_power_law,
    isoflop_optimum,
    parametric_allocation,
    parametric_optimum,
)
from lmx.scaling.points import Points


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
    # Every refit's numbers, aligned by resample (NaN where one lacks a key): what bands are made of.
    names = sorted({key for f in ok for key in f})
    samples = {key: np.array([f.get(key, np.nan) for f in ok]) for key in names}
    return {
        "intervals": intervals,
        "resamples": resamples,
        "failed": resamples - len(ok),
        "confidence": confidence,
        "_samples": samples,
    }


def allocation_grid(points: Points, budget: float | None = None, size: int = 41) -> np.ndarray:
    """The compute values at which allocation laws are evaluated and plotted: from half the
    smallest to twice the largest C of the points (or of `budget`), evenly in log C."""
    C = points.C if points.C is not None else points.flops_per_param_token() * points.N * points.D
    lo, hi = float(C.min()), float(C.max())
    if budget is not None:
        lo, hi = min(lo, budget), max(hi, budget)
    return np.geomspace(lo / 2, hi * 2, size)


def allocation(approach: str, params: dict[str, Any], C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N_opt(C) and D_opt(C) of fitted allocation laws, vectorised: `params` holds scalars (one fit)
    or arrays [R] (R bootstrap refits) of the approach's parameters; the result is [R, len(C)]
    (or [len(C)]). Approach 3 refits without an allocation (alpha or beta 0) give NaN."""
    C = np.asarray(C, np.float64)
    laws = {"2": isoflop_optimum, "3": parametric_allocation}
    if approach not in laws:
        raise FitError(f"approach {approach!r} has no compute-optimal allocation")
    # A trailing axis for C: scalars broadcast to [len(C)], arrays [R] to [R, len(C)].
    broadcast = {key: np.asarray(value, np.float64)[..., None] for key, value in params.items() if _numeric(value)}
    N, D = laws[approach](broadcast, C)
    return np.asarray(N), np.asarray(D)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | np.ndarray) and not isinstance(value, bool)


def allocation_band(approach: str, samples: dict[str, np.ndarray], C: np.ndarray, confidence: float) -> dict[str, Any]:
    """Percentile bands of N_opt(C) and D_opt(C) over bootstrap refits, JSON-ready:
    ``{"C": [...], "N_opt": {"lower": [...], "upper": [...]}, "D_opt": {...}}``."""
    tail = 100 * (1 - confidence) / 2
    band: dict[str, Any] = {"C": [float(c) for c in C], "confidence": confidence}
    for key, values in zip(("N_opt", "D_opt"), allocation(approach, samples, C), strict=True):
        lower, upper = np.nanpercentile(values, [tail, 100 - tail], axis=0)
        band[key] = {"lower": lower.tolist(), "upper": upper.tolist()}
    return band


def public(result: dict[str, Any]) -> dict[str, Any]:
    """A fit result without its in-memory parts (keys starting with ``_``: bootstrap samples), for
    JSON; a dict of results (several approaches) is handled key by key."""
    if "approach" not in result:
        return {key: public(value) for key, value in result.items()}
    return {key: value for key, value in result.items() if not key.startswith("_")}


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
    as one dict. `starts`: approach 3's L-BFGS-B starts (0: the whole grid). With resamples it also
    holds ``band`` (approaches 2 and 3: `allocation_band` over `allocation_grid`) and ``_samples``
    (every refit's parameters, arrays for plots; `public` leaves them out of the JSON)."""
    if approach not in APPROACHES:
        raise FitError(f"unknown approach {approach!r}; expected one of {sorted(APPROACHES)}")
    spec = APPROACHES[approach]
    if len(points) < spec.min_points:
        raise FitError(f"{points.source}: approach {approach} needs >= {spec.min_points} points, got {len(points)}")
    fit_kwargs: dict[str, Any] = {"with_E": with_E} if approach == "power" else {}
    fit = spec.fit(points, **fit_kwargs, **({"starts": starts} if approach == "3" else {}))
    result: dict[str, Any] = {"approach": approach, "source": points.source, "points": len(points)}
    if approach == "power":  # it fits one point per budget: the lowest loss
        result["frontier"] = len(points.groups())
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
        result["_samples"] = result["bootstrap"].pop("_samples")
        # Approach 3 with alpha or beta 0 has no allocation to draw a band of.
        if approach == "2" or (approach == "3" and fit["alpha"] > 0 and fit["beta"] > 0):
            grid = allocation_grid(points, budget)
            result["band"] = allocation_band(approach, result["_samples"], grid, confidence)
    return result


def format_fit(result: dict[str, Any]) -> str:
    """A fit result as a table: parameter, value, interval."""
    title = {"power": "L(C) = E + a C^-b", "2": "approach 2 (IsoFLOP)", "3": "approach 3, L = E + A/N^alpha + B/D^beta"}
    used = f"{result['points']} points"
    if "frontier" in result:
        used = f"the compute frontier ({result['frontier']} budgets' lowest losses) of {used}"
    lines = [f"{title[result['approach']]}: fitted to {used} from {result['source']}"]
    if "flops_per_param_token" in result:
        lines.append(f"  C = k N D with k = {result['flops_per_param_token']:.4g} (the median over the points)")
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
