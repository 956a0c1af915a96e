"""The learning rate of each model size, from the tuning sweep (or its committed results).

    python experiments/isoflop_tuned/analyse_tune.py runs/sweeps/isoflop_tune
    python experiments/isoflop_tuned/analyse_tune.py experiments/isoflop_tuned/tune_results.csv --out refit

Writes into --out (default: beside this file): tune_results.csv (one row per run; from a sweep
only), tuned_lr.json and tune_loss_vs_lr.png. tuned_lr.json holds, per model at the tuning budget,
the loss at every learning rate, the grid's best one, the parabola's minimum in log2(lr) through it
and its neighbours, and the learning rate sweep.py uses (the parabola's, to 3 significant figures;
the grid's best where the optimum is not bracketed); and the same optimum for the horizon probe.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from lmx.scaling.tuning import learning_rate_optimum

HERE = Path(__file__).resolve().parent
FIELDS = ("name", "budget", "model", "params", "learning_rate", "steps", "eval_loss", "train_time_s")


def read_sweep(directory: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(directory.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        coords = dict(json.loads((summary_path.parent / "config.json").read_text())["sweep"]["coords"])
        rows.append(
            {
                "name": summary["name"],
                "budget": coords["budget"],
                "model": coords["model"],
                "params": coords["params"],
                "learning_rate": coords["lr"],
                "steps": summary["steps"],
                "eval_loss": summary["final_eval"]["eval/loss"],
                "train_time_s": summary["train_time_s"],
            }
        )
    return rows


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("params", "steps"):
            row[key] = int(row[key])
        for key in ("budget", "learning_rate", "eval_loss", "train_time_s"):
            row[key] = float(row[key])
    return rows


def _significant(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits - 1}e}")


def tuned(rows: list[dict]) -> dict:
    """Per (budget, model): the losses by learning rate and the optimum; the smallest budget's
    optima are the tuned learning rates, any other budget is a probe of the horizon."""
    by: dict = defaultdict(dict)
    params: dict = {}
    for r in rows:
        by[(r["budget"], r["model"])][r["learning_rate"]] = r["eval_loss"]
        params[r["model"]] = r["params"]
    tune_budget = min(budget for budget, _ in by)
    out: dict = {"tune_budget": tune_budget, "models": {}, "probes": {}}
    for (budget, model), losses in sorted(by.items(), key=lambda kv: (kv[0][0], params[kv[0][1]])):
        lrs = sorted(losses)
        optimum = learning_rate_optimum(lrs, [losses[lr] for lr in lrs])
        entry = {
            "budget": budget,
            "params": params[model],
            "learning_rates": lrs,
            "losses": [losses[lr] for lr in lrs],
            "best_learning_rate": optimum.best,
            "best_loss": optimum.best_loss,
            "parabola_learning_rate": optimum.parabola,
        }
        if budget == tune_budget:
            entry["learning_rate"] = _significant(optimum.parabola) if optimum.bracketed else optimum.best
            out["models"][model] = entry
        else:
            out["probes"][f"C{budget:.0e}-{model}".replace("e+", "e")] = entry
    return out


def plot(result: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("viridis")
    models = result["models"]
    for k, (model, r) in enumerate(models.items()):
        color = cmap(0.1 + 0.75 * k / max(1, len(models) - 1))
        ax.plot(r["learning_rates"], r["losses"], marker="o", color=color, label=f"{model} ({r['params']:,})")
        ax.plot(r["learning_rate"], min(r["losses"]), marker="*", markersize=14, color=color)
    for name, r in result["probes"].items():
        ax.plot(r["learning_rates"], r["losses"], marker="s", ls="--", color="tab:red", label=f"{name} (probe)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate (stars: the one sweep.py uses)")
    ax.set_ylabel("final validation loss (nats per token)")
    ax.set_title(f"Each model size at {result['tune_budget']:.0e} FLOPs")
    ax.set_ylim(top=min(6.0, max(x for r in models.values() for x in r["losses"]) + 0.1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)


def load_results(source: str, out: Path, saved_as: str) -> list[dict]:
    """The rows of a sweep directory or of its saved CSV; a sweep's are saved as `out/saved_as`."""
    path = Path(source)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_csv(path) if path.suffix == ".csv" else read_sweep(path)
    if not rows:
        sys.exit(f"{source}: no finished runs")
    if path.suffix != ".csv":
        with (out / saved_as).open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: (r["budget"], r["params"], r["learning_rate"])))
    return rows


def main(source: str, out: Path) -> None:
    result = tuned(load_results(source, out, "tune_results.csv"))
    (out / "tuned_lr.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "tune_loss_vs_lr.png")
    for model, r in result["models"].items():
        edge = "" if r["parabola_learning_rate"] else " (grid edge: not bracketed)"
        print(f"{model}: learning rate {r['learning_rate']:.3g}{edge}, loss {r['best_loss']:.3f}")
    for name, r in result["probes"].items():
        print(f"probe {name}: best {r['best_learning_rate']:.3g}, parabola {r['parabola_learning_rate']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a sweep directory or tune_results.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: beside this file)")
    args = parser.parse_args()
    main(args.source, args.out)
