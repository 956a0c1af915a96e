"""The observations a scaling fit reads: (N, D, loss) per run, and the compute C where known.

Two sources:
- a CSV with columns ``N,D,loss`` and optionally ``C`` (and ``name``); extra columns are ignored;
- a sweep directory (or any directory of run directories): each run's ``summary.json`` gives
  D (tokens trained on) and the final validation loss, its ``config.json`` gives N and C under the
  sweep's FLOPs definition and the IsoFLOP budget it belongs to.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from lmx.config import Config
from lmx.errors import DataError
from lmx.model.flops import flops_per_token, param_counts


@dataclasses.dataclass(frozen=True)
class Points:
    """Observations, one per run. Arrays are float64 of equal length."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    C: np.ndarray | None  # training FLOPs; None when the source does not give them
    budget: np.ndarray | None  # the nominal IsoFLOP budget of each point (groups), when known
    names: tuple[str, ...]
    source: str
    unfinished: tuple[str, ...] = ()  # run directories without summary.json, left out

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, index: np.ndarray) -> Points:
        pick = lambda x: None if x is None else x[index]
        return Points(
            self.N[index],
            self.D[index],
            self.loss[index],
            pick(self.C),
            pick(self.budget),
            tuple(self.names[i] for i in index),
            self.source,
        )

    def flops_per_param_token(self) -> float:
        """k in C = k N D: the median over points where C is known, else 6."""
        if self.C is None:
            return 6.0
        return float(np.median(self.C / (self.N * self.D)))

    def groups(self) -> dict[float, np.ndarray]:
        """IsoFLOP groups: point indices by budget (the given budget, else C rounded to 3 digits)."""
        keys = self.budget if self.budget is not None else self.C
        if keys is None:
            keys = 6 * self.N * self.D
        rounded = np.array([float(f"{k:.3g}") for k in keys])
        return {float(k): np.flatnonzero(rounded == k) for k in np.unique(rounded)}


def load_points(path: str | Path, metric: str = "eval/loss") -> Points:
    """Points from a CSV file or a directory of runs (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return read_runs(path, metric)
    if path.is_file():
        return read_csv(path)
    raise DataError(f"{path}: no such file or directory (expected a CSV or a sweep directory)")


def read_csv(path: str | Path) -> Points:
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("N", "D", "loss") if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected N,D,loss and optionally C")
        has_c = "C" in columns
        rows = {"N": [], "D": [], "loss": [], "C": []}
        names = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            for key in ("N", "D", "loss") + (("C",) if has_c else ()):
                try:
                    value = float(row[key])
                except ValueError:
                    raise DataError(f"{path}:{line}: {key}={row[key]!r} is not a number") from None
                if not math.isfinite(value) or value <= 0:
                    raise DataError(f"{path}:{line}: {key}={row[key]} must be a positive finite number")
                rows[key].append(value)
            names.append(row.get("name") or f"row{line}")
    if not names:
        raise DataError(f"{path}: no data rows")
    arrays = {k: np.asarray(v, np.float64) for k, v in rows.items()}
    C = arrays["C"] if has_c else None
    return Points(arrays["N"], arrays["D"], arrays["loss"], C, None, tuple(names), str(path))


def read_runs(sweep_dir: str | Path, metric: str = "eval/loss") -> Points:
    """Every finished run (a ``*/summary.json``) directly under `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    N, D, loss, C, budget, names = [], [], [], [], [], []
    for summary_path in sorted(sweep_dir.glob("*/summary.json")):
        run_dir = summary_path.parent
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise DataError(f"{run_dir}: summary.json without config.json")
        summary = json.loads(summary_path.read_text())
        value = summary.get("final_eval", {}).get(metric)
        if value is None:
            raise DataError(f"{summary_path}: no final_eval[{metric!r}]")
        cfg = Config.from_json(config_path.read_text())
        definition = cfg.sweep.coord("flops_definition", "detailed")
        n = param_counts(cfg.model).by_definition(definition)
        N.append(n)
        D.append(summary["tokens"])
        loss.append(value)
        C.append(flops_per_token(cfg.model, cfg.data.seq_len, definition) * summary["tokens"])
        budget.append(cfg.sweep.coord("budget", math.nan))
        names.append(run_dir.name)
    if not names:
        raise DataError(f"{sweep_dir}: no finished runs (no */summary.json)")
    unfinished = tuple(
        sorted(p.parent.name for p in sweep_dir.glob("*/config.json") if not (p.parent / "summary.json").exists())
    )
    budgets = np.asarray(budget, np.float64)
    return Points(
        np.asarray(N, np.float64),
        np.asarray(D, np.float64),
        np.asarray(loss, np.float64),
        np.asarray(C, np.float64),
        None if np.isnan(budgets).any() else budgets,
        tuple(names),
        str(sweep_dir),
        unfinished,
    )
