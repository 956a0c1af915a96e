"""The IsoFLOP studies' tables for benchmarks/tables.py (experiments/isoflop_stdlib, one learning
rate; experiments/isoflop_tuned, each size at its best): their points, minima and fitted exponents,
each read from its study's folder (points.csv, fit/fit.json), as (header, rows); tables.py renders
them and adds the provenance line."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Table = tuple[list[str], list[list[Any]]]

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
STDLIB = EXPERIMENTS / "isoflop_stdlib"
TUNED = EXPERIMENTS / "isoflop_tuned"
APPROACHES = (("2", "approach 2 (IsoFLOP parabolas)"), ("3", "approach 3 (parametric law)"))


def points(study: Path) -> list[dict[str, str]]:
    with open(study / "points.csv", newline="") as f:
        return list(csv.DictReader(f))


def fit(study: Path) -> dict[str, Any]:
    return json.loads((study / "fit" / "fit.json").read_text())


def _budget(x: float) -> str:
    return f"{x:.0e}".replace("e+", "e")


def _by_budget_and_size(rows: list[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """(label, point) by budget, then N; the label of each budget's lowest loss in bold."""
    best: dict[str, dict[str, str]] = {}
    for p in rows:
        if p["budget"] not in best or float(p["loss"]) < float(best[p["budget"]]["loss"]):
            best[p["budget"]] = p
    ordered = sorted(rows, key=lambda p: (float(p["budget"]), float(p["N"])))
    return [(f"**{p['name']}**" if best[p["budget"]] is p else p["name"], p) for p in ordered]


def stdlib_runs() -> Table:
    out = []
    for name, p in _by_budget_and_size(points(STDLIB)):
        n, d = float(p["N"]), float(p["D"])
        out.append(
            [
                name,
                f"{n:,.0f}",
                f"{int(p['steps']):,}",
                f"{d:,.0f}",
                f"{d / n:.1f}",
                f"{float(p['loss']):.3f}",
                f"{float(p['eval/bits_per_byte']):.3f}",
                f"{float(p['train_time_s']):.0f} s",
            ]
        )
    return ["run", "N (porian)", "steps", "tokens D", "D/N", "val loss", "bits/byte", "train time"], out


def tuned_runs() -> Table:
    """Each (budget, size) at its best rate beside isoflop_stdlib's loss at 3e-3."""
    out = []
    for name, p in _by_budget_and_size(points(TUNED)):
        loss, stdlib = float(p["loss"]), float(p["stdlib_loss"])
        out.append(
            [
                name,
                f"{float(p['N']):,.0f}",
                f"{float(p['D']) / float(p['N']):.1f}",
                len(p["rates"].split()),
                f"{float(p['learning_rate']):.3g}" + (" (edge)" if p["edge"] == "True" else ""),
                f"{loss:.3f}",
                f"{stdlib:.3f}",
                f"{loss - stdlib:+.3f}",
            ]
        )
    return ["run", "N (porian)", "D/N", "rates tried", "best rate", "val loss", "at 3e-3 (stdlib)", "change"], out


def minima(study: Path) -> Table:
    rows = [
        [
            _budget(m["budget"]),
            f"{m['N_opt']:,.0f}",
            f"{m['D_opt'] / 1e6:.2f}M",
            f"{m['D_opt'] / m['N_opt']:.0f}",
            f"{m['loss_min']:.3f}",
            "yes" if m["inside"] else "no",
        ]
        for m in fit(study)["2"]["minima"]
    ]
    return ["budget C", "N_opt", "D_opt", "D_opt / N_opt", "lowest loss", "inside the sampled sizes"], rows


def _interval(f: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
    lo, hi = f["intervals"][key]
    return f"{fmt(f[key])} [{fmt(lo)}, {fmt(hi)}]"


def _num(x: float) -> str:
    return f"{x:.3g}"


def _big(x: float) -> str:
    return f"{x / 1e3:.0f}k" if x < 1e6 else f"{x / 1e6:.2f}M"


def exponents(study: Path) -> tuple[list[str], list[list[Any]], str]:
    """The two approaches' exponents and optima at the fit's budget, and a line giving approach 3's law."""
    fits = fit(study)
    rows = [
        [label, *(_interval(fits[a], k, f) for k, f in (("a", _num), ("b", _num), ("N_opt", _big), ("D_opt", _big)))]
        for a, label in APPROACHES
    ]
    budget = _budget(fits["2"]["budget"])
    header = ["fit", "a (N_opt ∝ C^a)", "b (D_opt ∝ C^b)", f"N_opt at {budget}", f"D_opt at {budget}"]
    f3 = fits["3"]
    law = ", ".join(_interval(f3, k, _num) for k in ("E", "A", "B", "alpha", "beta"))
    line = (
        f"Approach 3's law L(N, D) = E + A/N^alpha + B/D^beta: E, A, B, alpha, beta = {law} "
        f"({f3['bootstrap']['resamples']:,} bootstrap resamples, 95% intervals).\n"
    )
    return header, rows, line


def comparison() -> Table:
    """The two studies' exponents side by side (95% bootstrap intervals)."""
    stdlib, tuned = fit(STDLIB), fit(TUNED)
    rows = []
    for a, label in APPROACHES:
        for key in ("a", "b"):
            rows.append([f"{label}, {key}", _interval(stdlib[a], key, _num), _interval(tuned[a], key, _num)])
    budget = _budget(stdlib["3"]["budget"])
    for key in ("N_opt", "D_opt"):
        both = [_interval(f["3"], key, _big) for f in (stdlib, tuned)]
        rows.append([f"approach 3, {key} at {budget}", *both])
    power = [_interval(f["power"], "b", _num) for f in (stdlib, tuned)]
    rows.append(["frontier power law, b (L - E ∝ C^-b)", *power])
    return ["fit", "one rate (isoflop_stdlib)", "tuned per size (isoflop_tuned)"], rows
