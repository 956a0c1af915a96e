"""Plots of fitted scaling laws: the compute-optimal allocation N_opt(C), D_opt(C) of approaches 2
and 3 with their bootstrap bands (optimal.png), and approach 3's law against the observed losses
(approach3.png). Shared style and budget colours are in `lmx.scaling.plot`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from lmx.scaling.bootstrap import allocation, allocation_grid
from lmx.scaling.plot import C_LABEL, N_LABEL, BudgetColors, save, sci, source_title, styled
from lmx.scaling.points import Points

# How each approach is drawn: approach 2 black and solid with circles, approach 3 red and dashed
# with squares, so that the two stay apart where they overlap (and in greyscale print).
LOOK = {
    "2": {"color": "k", "ls": "-", "marker": "o", "band": {"color": "0.55", "alpha": 0.28}},
    "3": {"color": "C3", "ls": "--", "marker": "s", "band": {"color": "C3", "alpha": 0.16, "hatch": "///"}},
}
NAME = {"2": "approach 2 (IsoFLOP)", "3": "approach 3 (parametric)"}
WHAT = {"N_opt": ("N", "a", N_LABEL), "D_opt": ("D", "b", "training tokens D")}


def _tex_number(x: float) -> str:
    """x for mathtext: 0.574 or 1.36, or 8.8 x 10^-3 outside [0.01, 1000)."""
    if 0.01 <= abs(x) < 1000:
        return f"{x:.3g}"
    mantissa, _, power = f"{x:.2e}".partition("e")
    return f"{float(mantissa):.3g}{{\\times}}10^{{{int(power)}}}"


def _law_label(key: str, fit: dict[str, Any], which: str) -> str:
    """'approach 2 (IsoFLOP): N_opt = 8.8e-3 C^0.574, a in [0.537, 0.61]': the fitted law and its
    exponent's interval. Approach 3's coefficient is N_opt at C = 1 (its law is G (C/k)^a)."""
    symbol, exponent, _ = WHAT[which]
    coefficient = float(allocation(key, fit, np.array([1.0]))[0 if which == "N_opt" else 1][0])
    law = f"${symbol}_{{opt}} = {_tex_number(coefficient)}\\,C^{{{fit[exponent]:.3f}}}$"
    interval = fit.get("intervals", {}).get(exponent)
    spread = f", {exponent} in [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    return f"{NAME[key]}: {law}{spread}"


@styled
def plot_optimal(
    points: Points,
    fits: dict[str, dict[str, Any]],
    out: str | Path,
    colors: BudgetColors | None = None,
) -> Path:
    """N_opt(C) and D_opt(C), one panel each: approach 2's per-budget minima (circles in the
    budget's colour) and its power laws, approach 3's allocation (and its optimum at each budget:
    squares), each with its bootstrap band over the plotted range where bootstrapped, and the
    interval at --budget (error bars). The legends, with the fitted laws, sit below the panels."""
    keys = [k for k in ("2", "3") if k in fits and has_allocation(fits[k])]
    if not keys:
        raise ValueError("plot_optimal needs an approach 2 or 3 fit with a compute-optimal allocation")
    colors = colors or BudgetColors.of(points)
    budget = next((fits[k]["budget"] for k in keys if "budget" in fits[k]), None)
    grid = allocation_grid(points, budget)
    fig, axes = plt.subplots(1, 2, figsize=(13, 7), layout="constrained")
    for ax, which in zip(axes, ("N_opt", "D_opt"), strict=True):
        column = 0 if which == "N_opt" else 1
        handles, labels, bands = [], [], []
        for key in keys:
            fit, look = fits[key], LOOK[key]
            (line,) = ax.plot(grid, allocation(key, fit, grid)[column], color=look["color"], ls=look["ls"], lw=1.8)
            handle: Any = line
            if fit.get("band"):
                band = fit["band"]
                lower, upper = band[which]["lower"], band[which]["upper"]
                shade = ax.fill_between(band["C"], lower, upper, lw=0, zorder=1, **look["band"])
                handle = (shade, line)  # one legend entry: the law drawn over its band
                bands.append(f"{100 * band['confidence']:.0f}%, {fit['bootstrap']['resamples']} resamples")
            handles.append(handle)
            labels.append(_law_label(key, fit, which))
        if "2" in keys:
            for m in fits["2"]["minima"]:
                ax.scatter(m["C"], m[which], color=colors(m["budget"]), edgecolor="k", s=70, zorder=5)
            handles.append(ax.scatter([], [], color="0.6", edgecolor="k", s=70))
            labels.append("approach 2: each budget's IsoFLOP minimum (in the budget's colour)")
        if "3" in keys and not colors.continuous:  # too many budgets: a cloud of squares
            C3 = _budget_compute(points)
            handles.append(
                ax.scatter(
                    C3, allocation("3", fits["3"], C3)[column], marker="s", fc="none", ec="C3", s=70, lw=1.5, zorder=6
                )
            )
            labels.append("approach 3: its optimum at each budget")
        for key in keys:
            _budget_interval(ax, key, fits[key], which)
        symbol, _, label = WHAT[which]
        ax.set(xscale="log", yscale="log", xlabel=C_LABEL, ylabel=f"compute-optimal {label}")
        ax.set_xlim(grid[0], grid[-1])
        ax.set_title(f"compute-optimal {'model size' if which == 'N_opt' else 'training tokens'} ${symbol}_{{opt}}(C)$")
        more, more_labels = ax.get_legend_handles_labels()  # the error bars at --budget
        title = f"shaded: bootstrap bands ({'; '.join(dict.fromkeys(bands))})" if bands else None
        ax.legend(
            handles + more,
            labels + more_labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            fontsize=8.5,
            title=title,
            title_fontsize=8.5,
            frameon=False,
        )
    fig.suptitle(source_title(points, "compute-optimal allocation"))
    return save(fig, out)


def has_allocation(fit: dict[str, Any]) -> bool:
    return fit["approach"] == "2" or (fit.get("alpha", 0) > 0 and fit.get("beta", 0) > 0)


def _budget_compute(points: Points) -> np.ndarray:
    """Each budget's compute: the mean C of its runs (the budget itself without C)."""
    groups = sorted(points.groups().items())
    if points.C is None:
        return np.array([budget for budget, _ in groups])
    return np.array([points.C[index].mean() for _, index in groups])


def _budget_interval(ax: Any, key: str, fit: dict[str, Any], which: str) -> None:
    """An error bar at --budget: the bootstrap interval of N_opt or D_opt there."""
    if which not in fit.get("intervals", {}) or "budget" not in fit:
        return
    lo, hi = fit["intervals"][which]
    value, look = fit[which], LOOK[key]
    # Approaches side by side (a few percent apart in C), so that neither bar hides the other.
    C = fit["budget"] * (0.94 if key == "2" else 1.06)
    ax.errorbar(
        [C],
        [value],
        yerr=[[value - lo], [hi - value]],
        fmt=look["marker"],
        color=look["color"],
        mfc="white",
        ms=7,
        capsize=5,
        lw=1.5,
        zorder=7,
        label=f"approach {key} at C = {sci(fit['budget'])}: {sci(value)} [{sci(lo)}, {sci(hi)}]",
    )


@styled
def plot_approach3(
    points: Points,
    fit: dict[str, Any],
    out: str | Path,
    colors: BudgetColors | None = None,
    loss_label: str = "validation loss",
) -> Path:
    """Approach 3's law against the data. Left: predicted against observed loss, coloured by
    budget, with the line y = x. Right: the residuals, observed / predicted - 1 in percent, against
    N, each budget's points joined in order of N (a trend along a budget is a systematic miss)."""
    colors = colors or BudgetColors.of(points)
    predicted = fit["E"] + fit["A"] / points.N ** fit["alpha"] + fit["B"] / points.D ** fit["beta"]
    residual = 100 * (points.loss / predicted - 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6), width_ratios=(1, 1.35), layout="constrained")
    for budget, index in sorted(points.groups().items()):
        color = colors(budget)
        label = None if colors.continuous else f"C = {sci(budget)}"
        left.scatter(points.loss[index], predicted[index], color=color, s=40, edgecolor="k", lw=0.4, label=label)
        order = index[np.argsort(points.N[index])]
        if not colors.continuous:
            right.plot(points.N[order], residual[order], color=color, lw=1, alpha=0.6)
        right.scatter(points.N[order], residual[order], color=color, s=40, edgecolor="k", lw=0.4, zorder=3)
    lo = min(points.loss.min(), predicted.min())
    hi = max(points.loss.max(), predicted.max())
    pad = 0.04 * (hi - lo or 1)
    diagonal = [lo - pad, hi + pad]
    left.plot(diagonal, diagonal, "k--", lw=1, label="y = x (a perfect fit)", zorder=0)
    left.set(xlim=diagonal, ylim=diagonal, aspect="equal")
    left.set(xlabel=f"observed {loss_label}", ylabel=f"predicted {loss_label}")
    law = f"$L = {sci(fit['E'])} + {sci(fit['A'])}/N^{{{fit['alpha']:.3f}}} + {sci(fit['B'])}/D^{{{fit['beta']:.3f}}}$"
    left.set_title(f"fitted law: {law}", fontsize=11)
    left.legend(loc="upper left", title=None if colors.continuous else "budget (FLOPs)")
    rms = float(np.sqrt(np.mean(residual**2)))
    right.axhline(0, color="k", lw=1, ls="--")
    right.set(xscale="log", xlabel=N_LABEL, ylabel="observed / predicted - 1 (%)")
    right.set_title(f"residuals (RMS {rms:.2g}%, largest {np.abs(residual).max():.2g}%)")
    limit = 1.15 * max(np.abs(residual).max(), 1e-3)
    right.set_ylim(-limit, limit)  # symmetric: a bias to one side shows
    if colors.continuous:
        colors.colorbar(fig, right)
    fig.suptitle(source_title(points, "approach 3 against the data"))
    return save(fig, out)
