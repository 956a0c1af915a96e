"""The IsoFLOP points with each size at its best learning rate: per (budget, size), the lowest final
validation loss over every rate it was trained at.

    python experiments/isoflop_tuned/analyse.py runs/sweeps/isoflop_tuned
    python experiments/isoflop_tuned/analyse.py experiments/isoflop_tuned/tuned_results.csv --out refit

The rates of a (budget, size) come from three studies: experiments/isoflop_stdlib (3e-3 for all,
its points.csv), tune.py (1e12: six rates 2^-10 to 2^-5; L2-d64 at 3e12: three more) and sweep.py
(3e12 and 1e13: the tuned rate r and 2r). Writes into --out (default: beside this file):
tuned_results.csv (sweep.py's runs, one row each; from a sweep directory only), points.csv (one
row per (budget, size) with N, D, C and the best loss: `lmx fit` reads it; the extra columns give
the winning rate, every rate tried and isoflop_stdlib's loss) and loss_vs_lr.png.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
from analyse_tune import load_results, read_csv

from lmx.config import call_python_file

HERE = Path(__file__).resolve().parent
STDLIB = HERE.parent / "isoflop_stdlib"
POINT_FIELDS = ("name", "budget", "model", "N", "D", "C", "loss", "learning_rate", "rates", "stdlib_loss", "edge")


def stdlib_points() -> tuple[list[dict], float]:
    """isoflop_stdlib's points and the one learning rate they were trained at."""
    with (STDLIB / "points.csv").open() as f:
        points = list(csv.DictReader(f))
    return points, call_python_file(STDLIB / "sweep.py", "get_sweep", "sweep file").base.optim.learning_rate


def best_points(points: list[dict], stdlib_lr: float, rows: list[dict]) -> list[dict]:
    """Each stdlib point with its loss replaced by the lowest over every rate tried at its (budget, size)."""
    losses: dict = defaultdict(dict)
    for r in rows:
        losses[(float(r["budget"]), r["model"])][float(r["learning_rate"])] = float(r["eval_loss"])
    out = []
    for p in points:
        key = (float(p["budget"]), p["sweep.model"])
        tried = {stdlib_lr: float(p["loss"]), **losses[key]}
        best = min(tried, key=tried.get)
        out.append(
            {
                "name": p["name"],
                "budget": p["budget"],
                "model": p["sweep.model"],
                "N": p["N"],
                "D": p["D"],
                "C": p["C"],
                "loss": tried[best],
                "learning_rate": best,
                "rates": " ".join(f"{lr:.4g}" for lr in sorted(tried)),
                "stdlib_loss": p["loss"],
                # The best rate is the smallest or largest tried: the optimum may lie beyond it.
                "edge": best in (min(tried), max(tried)),
            }
        )
    return out


def plot(points: list[dict], rows: list[dict], stdlib_lr: float, out: Path) -> None:
    budgets = sorted({float(p["budget"]) for p in points})
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    models = list(dict.fromkeys(p["model"] for p in points))
    for ax, budget in zip(axes, budgets, strict=True):
        for k, model in enumerate(models):
            color = cmap(0.1 + 0.75 * k / max(1, len(models) - 1))
            (p,) = [p for p in points if float(p["budget"]) == budget and p["model"] == model]
            tried = {stdlib_lr: float(p["stdlib_loss"])}
            tried |= {
                float(r["learning_rate"]): float(r["eval_loss"])
                for r in rows
                if float(r["budget"]) == budget and r["model"] == model
            }
            lrs = sorted(tried)
            ax.plot(lrs, [tried[lr] for lr in lrs], marker="o", color=color, label=model)
            ax.plot(p["learning_rate"], p["loss"], marker="*", markersize=14, color=color)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{budget:.0e} FLOPs")
        ax.set_xlabel("learning rate (stars: each size's best)")
    axes[0].set_ylabel("final validation loss (nats per token)")
    axes[0].set_ylim(top=4.5)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(source: str, out: Path) -> None:
    rows = read_csv(HERE / "tune_results.csv") + load_results(source, out, "tuned_results.csv")
    points, stdlib_lr = stdlib_points()
    best = best_points(points, stdlib_lr, rows)
    with (out / "points.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, POINT_FIELDS)
        writer.writeheader()
        writer.writerows(best)
    plot(best, rows, stdlib_lr, out / "loss_vs_lr.png")
    for p in best:
        edge = " (edge of the rates tried)" if p["edge"] else ""
        print(
            f"{p['name']}: {p['loss']:.3f} at {p['learning_rate']:.3g}{edge}; "
            f"{float(p['stdlib_loss']):.3f} at {stdlib_lr:g}; rates {p['rates']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="sweep.py's sweep directory or tuned_results.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: beside this file)")
    args = parser.parse_args()
    main(args.source, args.out)
