"""Scaling plots (matplotlib, PNG): IsoFLOP profiles and the frontier, the compute-optimal
allocation with its intervals, and the loss curves of a sweep's runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from lmx.config import load_config
from lmx.model.flops import flops_per_token, param_counts
from lmx.scaling.fit import isoflop_optimum, parametric_optimum
from lmx.scaling.points import Points
from lmx.train.metrics import read_jsonl


def _budget_colors(n: int) -> list:
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.1, 0.85, max(n, 1))]


def plot_isoflop(points: Points, fits: dict[str, dict[str, Any]], out: str | Path) -> Path:
    """Two panels. Left: loss against N per budget, with each budget's parabola (the IsoFLOP
    curves) and its minimum. Right: loss against compute for every run, coloured by budget, with
    the fitted frontier (the power law L(C), and approach 3's L(N_opt(C), D_opt(C)) when given)."""
    groups = sorted(points.groups().items())
    colors = _budget_colors(len(groups))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (budget, index), color in zip(groups, colors, strict=True):
        N, L = points.N[index], points.loss[index]
        left.scatter(N, L, color=color, label=f"C = {budget:.2g}", zorder=3)
        if len(np.unique(N)) >= 3:
            p = np.polyfit(np.log(N), L, 2)
            x = np.linspace(np.log(N).min() - 0.2, np.log(N).max() + 0.2, 100)
            left.plot(np.exp(x), np.polyval(p, x), color=color, lw=1)
            if p[0] > 0:
                x_min = -p[1] / (2 * p[0])
                left.scatter([np.exp(x_min)], [np.polyval(p, x_min)], marker="*", s=120, color=color, edgecolor="k")
        C = points.C[index] if points.C is not None else np.full(len(index), budget)
        right.scatter(C, L, color=color, s=18, zorder=3)
    left.set(xscale="log", xlabel="parameters N", ylabel="validation loss", title="IsoFLOP profiles")
    left.legend(fontsize=8)
    C_all = points.C if points.C is not None else np.array([b for b, _ in groups])
    grid = np.geomspace(C_all.min() / 1.5, C_all.max() * 3, 100)
    if "power" in fits:
        f = fits["power"]
        right.plot(grid, f["E"] + f["a"] * grid ** (-f["b"]), "k--", lw=1, label=f"L(C) = E + a C^-{f['b']:.3f}")
    if "3" in fits:
        f = fits["3"]
        frontier = []
        for C in grid:
            N, D = parametric_optimum(f, C)
            frontier.append(f["E"] + f["A"] / N ** f["alpha"] + f["B"] / D ** f["beta"])
        right.plot(grid, frontier, "r-", lw=1, label="approach 3 frontier")
    right.set(xscale="log", xlabel="training FLOPs C", ylabel="validation loss", title="loss against compute")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    return _save(fig, out)


def plot_optimal(fits: dict[str, dict[str, Any]], out: str | Path) -> Path:
    """N_opt(C) and D_opt(C): approach 2's per-budget minima and power laws, approach 3's
    allocation, and bootstrap intervals at the fit's budget where they were computed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    budgets = []
    if "2" in fits:
        budgets += [m["C"] for m in fits["2"]["minima"]]
    budgets += [f["budget"] for f in fits.values() if "budget" in f]
    if not budgets:
        raise ValueError("plot_optimal needs an approach 2 fit or a fit with a budget")
    grid = np.geomspace(min(budgets) / 2, max(budgets) * 2, 100)
    for ax, which, exponent in ((axes[0], "N_opt", "a"), (axes[1], "D_opt", "b")):
        if "2" in fits:
            f = fits["2"]
            ax.scatter(
                [m["C"] for m in f["minima"]],
                [m[which] for m in f["minima"]],
                color="C0",
                zorder=3,
                label="IsoFLOP minima",
            )
            line = [isoflop_optimum(f, C)[0 if which == "N_opt" else 1] for C in grid]
            ax.plot(grid, line, "C0-", lw=1, label=f"approach 2: {exponent} = {f[exponent]:.3f}")
        if "3" in fits:
            f = fits["3"]
            line = [parametric_optimum(f, C)[0 if which == "N_opt" else 1] for C in grid]
            ax.plot(grid, line, "C3--", lw=1, label=f"approach 3: {exponent} = {f[exponent]:.3f}")
        for key, color in (("2", "C0"), ("3", "C3")):
            f = fits.get(key, {})
            if which in f.get("intervals", {}):
                lo, hi = f["intervals"][which]
                ax.errorbar(
                    [f["budget"]],
                    [f[which]],
                    yerr=[[f[which] - lo], [hi - f[which]]],
                    fmt="o",
                    color=color,
                    capsize=4,
                    label=f"approach {key} at C = {f['budget']:.2g} (95% CI)",
                )
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=which)
        ax.legend(fontsize=8)
    axes[0].set_title("compute-optimal model size")
    axes[1].set_title("compute-optimal training tokens")
    return _save(fig, out)


def plot_loss_curves(run_dirs: Sequence[str | Path], out: str | Path, x: str = "flops", smoothing: float = 0.9) -> Path:
    """Training loss of each run against its FLOPs (``x="flops"``, under the run's sweep's FLOPs
    definition) or tokens (``x="tokens"``), from metrics.jsonl. One panel per IsoFLOP budget (a
    single panel for other sweeps), runs coloured by parameter count; the curves are exponential
    moving averages of the logged losses (`smoothing` 0 shows them raw)."""
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
    sizes = sorted({r[1] for r in runs})
    colors = dict(zip(sizes, _budget_colors(len(sizes)), strict=True))
    fig, axes = plt.subplots(1, max(len(budgets), 1), figsize=(4.2 * max(len(budgets), 1) + 1, 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=False):
        for b, params, name, values, loss in runs:
            if b == budget:
                ax.plot(values, loss, color=colors[params], lw=1.2, label=f"{name} ({params:,})")
        ax.set(xscale="log", xlabel="training FLOPs" if x == "flops" else "tokens", ylabel="training loss (EMA)")
        ax.set_title(f"C = {budget:.2g}" if budget is not None else "loss curves")
        ax.legend(fontsize=6)
    return _save(fig, out)


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
