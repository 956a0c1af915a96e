"""Scaling plots (matplotlib, PNG), as a paper would print them: IsoFLOP profiles and the frontier,
and the loss curves of a sweep's runs. The fitted laws' plots (the compute-optimal allocation with
its bootstrap bands, approach 3 against the data) are in `lmx.scaling.plot_fits`.

Every plot colours a point, a curve or a panel by its IsoFLOP budget through one `BudgetColors`,
made from the points, so that a budget has the same colour in every panel of every plot.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors

from lmx.config import load_config
from lmx.model.flops import flops_per_token, param_counts
from lmx.scaling.fit import parametric_optimum
from lmx.scaling.points import Points
from lmx.train.metrics import read_jsonl

# Sizes for a figure printed at column or page width: labels stay readable when scaled down.
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.titlesize": 13,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
}
# viridis without its darkest and lightest ends (near black, and yellow that vanishes on white).
_CMAP = mcolors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0.05, 0.88, 256)), "budgets")
MAX_LEGEND_BUDGETS = 8  # more budgets get a colour bar instead of one legend entry each
C_LABEL = "training compute C (FLOPs)"
N_LABEL = "parameters N"


def styled(plot: Callable[..., Path]) -> Callable[..., Path]:
    """Runs a plot function under `STYLE` without changing matplotlib's global settings."""

    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)

    return wrapper


def sci(x: float, digits: int = 3) -> str:
    """A number as 8.8e-3 or 0.574 or 1.23e12: short, and without the `e+` of Python's format."""
    text = f"{x:.{digits}g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def budget_key(budget: float) -> float:
    """The budget rounded as `Points.groups` rounds it (3 significant digits)."""
    return float(f"{budget:.3g}")


class BudgetColors:
    """One colour per IsoFLOP budget: viridis by rank for a few budgets (each one distinct), by
    log budget for many (shown with a colour bar)."""

    def __init__(self, budgets: Iterable[float]) -> None:
        self.budgets = sorted({budget_key(b) for b in budgets})
        self.continuous = len(self.budgets) > MAX_LEGEND_BUDGETS
        lo, hi = (self.budgets[0], self.budgets[-1]) if self.budgets else (1.0, 1.0)
        self.norm = mcolors.LogNorm(lo, hi if hi > lo else lo * 10)

    @classmethod
    def of(cls, points: Points) -> BudgetColors:
        return cls(points.groups())

    def __call__(self, budget: float | None) -> Any:
        if budget is None or not self.budgets:
            return "0.3"
        key = budget_key(budget)
        if self.continuous or key not in self.budgets:
            return _CMAP(float(np.clip(self.norm(key), 0, 1)))
        rank = self.budgets.index(key)
        return _CMAP(rank / max(len(self.budgets) - 1, 1))

    def shades(self, budget: float | None, n: int) -> list[Any]:
        """`n` shades of a budget's colour, light to dark (runs of one budget by size)."""
        if budget is None:
            return [_CMAP(x) for x in np.linspace(0, 1, max(n, 1))]
        h, _, s = colorsys.rgb_to_hls(*mcolors.to_rgb(self(budget)))
        return [colorsys.hls_to_rgb(h, lightness, s) for lightness in np.linspace(0.72, 0.22, n)]

    def colorbar(self, fig: Any, ax: Any) -> None:
        """A colour bar of the budgets beside `ax`, when they are too many for a legend."""
        mappable = matplotlib.cm.ScalarMappable(self.norm, _CMAP)
        fig.colorbar(mappable, ax=ax, label="compute C (FLOPs)", pad=0.02)


def source_title(points: Points, what: str) -> str:
    """`what`, then the source (its last path component) and how many runs (and budgets) it has."""
    name = Path(points.source).name or points.source
    budgets = len(points.groups())
    # Points without given budgets, at many computes (not an IsoFLOP design), have none to count.
    counted = points.budget is not None or budgets <= MAX_LEGEND_BUDGETS
    return f"{what}: {name} ({len(points)} runs" + (f", {budgets} budgets)" if counted else ")")


@styled
def plot_isoflop(
    points: Points,
    fits: dict[str, dict[str, Any]],
    out: str | Path,
    colors: BudgetColors | None = None,
    loss_label: str = "validation loss",
) -> Path:
    """Two panels. Left: loss against N per budget, with each budget's parabola in log N (the
    IsoFLOP profile) and its minimum. Right: loss against compute for every run, coloured by
    budget, its frontier (each budget's lowest loss) ringed, with the fitted power law L(C) (its
    values in the legend) and approach 3's L(N_opt(C), D_opt(C)) when they were fitted."""
    colors = colors or BudgetColors.of(points)
    groups = sorted(points.groups().items())
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
    for budget, index in groups:
        color = colors(budget)
        N, L = points.N[index], points.loss[index]
        label = None if colors.continuous else f"C = {sci(budget)} ({len(index)} runs)"
        left.scatter(N, L, color=color, s=50, edgecolor="white", linewidth=0.5, label=label, zorder=3)
        if len(np.unique(N)) >= 3:
            p = np.polyfit(np.log(N), L, 2)
            x = np.linspace(np.log(N).min() - 0.2, np.log(N).max() + 0.2, 100)
            left.plot(np.exp(x), np.polyval(p, x), color=color, lw=1.4, zorder=2)
            if p[0] > 0:
                x_min = -p[1] / (2 * p[0])
                left.scatter([np.exp(x_min)], [np.polyval(p, x_min)], marker="*", s=180, color=color, edgecolor="k")
        C = points.C[index] if points.C is not None else np.full(len(index), budget)
        right.scatter(C, L, color=color, s=40, edgecolor="white", linewidth=0.5, alpha=0.85, zorder=3)
        best = np.argmin(L)
        right.scatter(C[best], L[best], s=110, facecolor="none", edgecolor="k", linewidth=1.2, zorder=4)
    right.scatter([], [], s=110, facecolor="none", edgecolor="k", label="frontier: lowest loss per budget")
    if not colors.continuous:
        left.scatter([], [], marker="*", s=180, color="0.6", edgecolor="k", label="parabola minimum")
    left.set(xscale="log", xlabel=N_LABEL, ylabel=loss_label, title="IsoFLOP profiles (loss against model size)")
    C_all = points.C if points.C is not None else np.array([b for b, _ in groups])
    grid = np.geomspace(C_all.min() / 1.5, C_all.max() * 1.5, 100)
    if "power" in fits:
        f = fits["power"]
        values = f"E = {sci(f['E'], 4)}, a = {sci(f['a'], 4)}, b = {f['b']:.3f}"
        if "b" in f.get("intervals", {}):
            values += f" [{f['intervals']['b'][0]:.3f}, {f['intervals']['b'][1]:.3f}]"
        label = f"power law $L(C) = E + a\\,C^{{-b}}$\n{values}"
        right.plot(grid, f["E"] + f["a"] * grid ** (-f["b"]), "k--", lw=1.5, label=label, zorder=2)
    if "3" in fits and fits["3"].get("alpha", 0) > 0 and fits["3"].get("beta", 0) > 0:
        f = fits["3"]
        frontier = []
        for C in grid:
            N, D = parametric_optimum(f, C)
            frontier.append(f["E"] + f["A"] / N ** f["alpha"] + f["B"] / D ** f["beta"])
        right.plot(grid, frontier, color="C3", lw=1.5, label="approach 3: $L(N_{opt}(C), D_{opt}(C))$", zorder=2)
    right.set(xscale="log", xlabel=C_LABEL, ylabel=loss_label, title="loss against compute")
    right.legend(loc="upper right")
    if colors.continuous:
        colors.colorbar(fig, right)
    else:
        left.legend(loc="best", title="budget (FLOPs)")
    fig.suptitle(source_title(points, "IsoFLOP study"))
    return save(fig, out)


@styled
def plot_loss_curves(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    x: str = "flops",
    smoothing: float = 0.9,
    colors: BudgetColors | None = None,
    title: str | None = None,
) -> Path:
    """Training loss of each run against its FLOPs (``x="flops"``, under the run's sweep's FLOPs
    definition) or tokens (``x="tokens"``), from metrics.jsonl. One panel per IsoFLOP budget (a
    single panel for other sweeps), titled in the budget's colour; its runs in shades of that
    colour, light to dark by parameter count. The curves are exponential moving averages of the
    logged losses (`smoothing` 0 shows them raw)."""
    runs = []
    for run_dir in map(Path, run_dirs):
        rows = read_jsonl(run_dir / "metrics.jsonl")  # a row cut off by a kill is skipped
        rows = [r for r in rows if "loss" in r and "tokens_seen" in r]
        if not rows:
            continue
        cfg = load_config(run_dir / "config.json")  # errors name the file
        definition = cfg.sweep.coord("flops_definition", "detailed")
        tokens = np.array([r["tokens_seen"] for r in rows], float)
        values = tokens * flops_per_token(cfg.model, cfg.data.seq_len, definition) if x == "flops" else tokens
        loss = np.array([r["loss"] for r in rows], float)
        for i in range(1, len(loss)):
            loss[i] = smoothing * loss[i - 1] + (1 - smoothing) * loss[i]
        params = param_counts(cfg.model).by_definition(definition)
        runs.append((cfg.sweep.coord("budget"), params, run_dir.name, values, loss))
    budgets = sorted({r[0] for r in runs}, key=lambda b: (b is None, b or 0))
    colors = colors or BudgetColors(b for b in budgets if b is not None)
    panels = max(len(budgets), 1)
    fig, axes = plt.subplots(
        1, panels, figsize=(4.8 * panels + 0.6, 4.8), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, budget in zip(axes[0], budgets, strict=False):
        mine = sorted((r for r in runs if r[0] == budget), key=lambda r: r[1])
        for (_, params, name, values, loss), shade in zip(mine, colors.shades(budget, len(mine)), strict=True):
            ax.plot(values, loss, color=shade, lw=1.5, label=f"{name} ({sci(params, 2)} params)")
        ax.set(xscale="log", xlabel=C_LABEL if x == "flops" else "training tokens")
        if budget is not None:
            ax.set_title(f"budget C = {sci(budget)} FLOPs", color=colors(budget), fontweight="bold")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel(f"training loss (EMA {smoothing:g})" if smoothing else "training loss")
    fig.suptitle(title or f"training loss curves ({len(runs)} runs)")
    return save(fig, out)


def save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
