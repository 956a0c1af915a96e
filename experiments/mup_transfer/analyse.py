"""The transfer study's table and plots from a finished sweep (or the committed results.csv).

    python experiments/mup_transfer/analyse.py runs/sweeps/mup_transfer
    python experiments/mup_transfer/analyse.py experiments/mup_transfer/results.csv --out refit

Writes into --out (default: beside this file): results.csv (one row per run; from a sweep only),
optima.json (per parametrization and width: the seed-mean loss at every learning rate, the grid's
best learning rate and a parabola's minimum in log2 learning rate through the best point and its
neighbours) and loss_vs_lr.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lmx.scaling.tuning import learning_rate_optimum

HERE = Path(__file__).resolve().parent
FIELDS = ("name", "parametrization", "width", "learning_rate", "seed", "eval_loss", "params", "train_time_s")


def read_sweep(directory: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(directory.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        coords = dict(json.loads((summary_path.parent / "config.json").read_text())["sweep"]["coords"])
        rows.append(
            {
                "name": summary["name"],
                "parametrization": coords["parametrization"],
                "width": coords["width"],
                "learning_rate": coords["learning_rate"],
                "seed": coords["seed"],
                "eval_loss": summary["final_eval"]["eval/loss"],
                "params": summary["params"],
                "train_time_s": summary["train_time_s"],
            }
        )
    return rows


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("width", "seed", "params"):
            row[key] = int(row[key])
        for key in ("learning_rate", "eval_loss", "train_time_s"):
            row[key] = float(row[key])
    return rows


def optima(rows: list[dict]) -> dict:
    """Per parametrization and width: seed-mean loss by learning rate, and where it is lowest."""
    losses: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        losses[(r["parametrization"], r["width"])][r["learning_rate"]].append(r["eval_loss"])
    out: dict = defaultdict(dict)
    for (p, width), by_lr in sorted(losses.items()):
        lrs = sorted(by_lr)
        mean = np.array([np.mean(by_lr[lr]) for lr in lrs])
        spread = [float(np.ptp(by_lr[lr])) for lr in lrs]
        optimum = learning_rate_optimum(lrs, mean)
        out[p][str(width)] = {
            "learning_rates": lrs,
            "mean_loss": mean.tolist(),
            "seed_spread": spread,
            "seeds": [len(by_lr[lr]) for lr in lrs],
            "best_learning_rate": optimum.best,
            "best_loss": optimum.best_loss,
            "parabola_learning_rate": optimum.parabola,
        }
    return out


def plot(result: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, len(result), figsize=(5.2 * len(result), 4), sharey=True, squeeze=False)
    for ax, (p, widths) in zip(axes[0], result.items(), strict=True):
        cmap = plt.get_cmap("viridis")
        for k, (width, r) in enumerate(sorted(widths.items(), key=lambda kv: int(kv[0]))):
            color = cmap(0.1 + 0.75 * k / max(1, len(widths) - 1))
            ax.plot(r["learning_rates"], r["mean_loss"], marker="o", color=color, label=f"width {width}")
            ax.plot(r["best_learning_rate"], r["best_loss"], marker="*", markersize=14, color=color)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_title(f"{p}: final validation loss (mean of seeds)")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation loss (nats per token)")
    values = [x for w in result.values() for r in w.values() for x in r["mean_loss"]]
    axes[0][0].set_ylim(min(values) - 0.05, max(values) + 0.05)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(source: str, out: Path) -> None:
    path = Path(source)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_csv(path) if path.suffix == ".csv" else read_sweep(path)
    if not rows:
        sys.exit(f"{source}: no finished runs")
    if path.suffix != ".csv":
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    result = optima(rows)
    (out / "optima.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "loss_vs_lr.png")
    for p, widths in result.items():
        best = ", ".join(f"{w}: {r['best_learning_rate']:.3g}" for w, r in widths.items())
        print(f"{p}: best learning rate by width: {best}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a sweep directory or results.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: beside this file)")
    args = parser.parse_args()
    main(args.source, args.out)
