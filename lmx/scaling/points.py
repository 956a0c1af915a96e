"""The observations a scaling fit reads: (N, D, loss) per run, and the compute C where known.

Two sources:
- a CSV with columns ``N,D,loss`` and optionally ``C``, ``budget`` (the nominal IsoFLOP budget,
  which groups the points as a sweep's coordinates do) and ``name``; extra columns are ignored,
  and so are empty unnamed ones (a trailing comma on every line). UTF-8 (with or without a BOM) and
  UTF-16 (with a BOM) are read; a header without commas but with tabs or semicolons sets that
  separator. `write_points` writes such a CSV (with full float precision, so a fit of it equals a
  fit of the sweep directory it came from);
- a sweep directory (or any directory of run directories): each run's ``summary.json`` gives
  D (tokens trained on) and the final validation loss, its ``config.json`` gives N and C under the
  sweep's FLOPs definition and the IsoFLOP budget it belongs to. A run whose files cannot be read
  (cut off by a killed process, say) is left out and named in `Points.unusable`.

Malformed input is a `DataError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lmx import atomic
from lmx.config import Config
from lmx.data.text_files import read_text
from lmx.errors import ConfigError, DataError
from lmx.model.flops import flops_per_token, param_counts

EXPECTED = "expected a CSV with the header N,D,loss (and optionally C, budget, name) or a sweep directory"


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
    # Runs with a summary.json whose files cannot be read or used, left out: (run name, why), the
    # why naming the file, e.g. ("b", "summary.json: cut off at line 3 (killed while writing?)").
    unusable: tuple[tuple[str, str], ...] = ()
    # Per point, what else its run recorded (sweep directories only: steps, final evaluation,
    # training time, model shape, sweep coordinates): extra columns of `write_points`.
    details: tuple[dict[str, Any], ...] = ()

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
    if path.exists():
        raise DataError(f"{path}: not a regular file or directory; {EXPECTED}")
    raise DataError(f"{path}: no such file or directory (expected a CSV or a sweep directory)")


# -------------------------------------------------------------------------------------------------
# CSV


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: str | Path) -> Points:
    path = Path(path)
    text = read_text(path, "CSV", EXPECTED)
    if not text.strip():
        raise DataError(f"{path}: empty file; {EXPECTED}")
    if text.lstrip()[0] in "{[":
        raise DataError(f"{path}: this is JSON, not CSV; {EXPECTED}")
    first_line = next(line for line in text.splitlines() if line.strip())
    delimiter = next((d for d in (",", "\t", ";") if d in first_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        header_line = reader.line_num
        if header is None:
            raise DataError(f"{path}: no header and no data, only separators; {EXPECTED}")
        columns = [c.strip() for c in header]
        index = {}
        for key in ("N", "D", "loss", "C", "budget", "name"):
            where = [i for i, c in enumerate(columns) if c == key]
            if len(where) > 1:
                raise DataError(f"{path}:{header_line}: column {key} appears {len(where)} times in the header")
            if where:
                index[key] = where[0]
        missing = [c for c in ("N", "D", "loss") if c not in index]
        if missing:
            found = delimiter.join(columns)
            found = found if len(found) <= 60 else found[:57] + "..."
            hint = (
                "; it is data, not a header: add the line N,D,loss first"
                if all(_number(c) for c in columns if c)
                else ""
            )
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected N,D,loss and optionally C, budget "
                f"(the header, line {header_line}, is {found!r}{hint})"
            )
        numeric = [k for k in ("N", "D", "loss", "C", "budget") if k in index]
        needed = max(index[k] for k in numeric) + 1  # a row may leave out a name at the end
        rows: dict[str, list[float]] = {k: [] for k in numeric}
        names = []
        previous = header_line
        for raw in reader:
            line, previous = previous + 1, reader.line_num  # the row's first line (a quoted field may span lines)
            if not any(cell.strip() for cell in raw):
                continue  # a blank line, or one of only separators
            if len(raw) < needed:
                unclosed = " (a quote that is never closed?)" if any("\n" in c or "\r" in c for c in raw) else ""
                raise DataError(
                    f"{path}:{line}: {_fields(len(raw))}, but the header (line {header_line}) has "
                    f"{len(columns)}{unclosed}"
                )
            extra = [cell for cell in raw[len(columns) :] if cell.strip()]
            if extra:
                raise DataError(
                    f"{path}:{line}: {_fields(len(raw))}, but the header (line {header_line}) has {len(columns)} "
                    f"(extra {', '.join(map(repr, extra))}; a number written with thousands separators?)"
                )
            for key in numeric:
                cell = raw[index[key]].strip()
                try:
                    value = float(cell)
                except ValueError:
                    raise DataError(f"{path}:{line}: {key}={cell!r} is not a number") from None
                if not math.isfinite(value) or value <= 0:
                    raise DataError(f"{path}:{line}: {key}={cell} must be a positive finite number")
                rows[key].append(value)
            name = raw[index["name"]].strip() if "name" in index and index["name"] < len(raw) else ""
            names.append(name or f"row{line}")
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None
    if not names:
        raise DataError(f"{path}: no data rows (only the header, line {header_line})")
    arrays = {k: np.asarray(v, np.float64) for k, v in rows.items()}
    return Points(
        arrays["N"], arrays["D"], arrays["loss"], arrays.get("C"), arrays.get("budget"), tuple(names), str(path)
    )


def write_points(points: Points, path: str | Path) -> Path:
    """`points` as a CSV that `read_csv` reads back to the same arrays: one row per point with
    name, budget (when known), N, D, C (when known) and loss, floats written with repr (exact),
    then the points' `details` as extra columns (which the reader ignores)."""
    columns = ["name"] + (["budget"] if points.budget is not None else []) + ["N", "D"]
    columns += (["C"] if points.C is not None else []) + ["loss"]
    extra = list(dict.fromkeys(key for detail in points.details for key in detail if key not in columns))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns + extra)
    for i, name in enumerate(points.names):
        arrays = {"budget": points.budget, "N": points.N, "D": points.D, "C": points.C, "loss": points.loss}
        row = [name] + [repr(float(arrays[key][i])) for key in columns[1:]]
        detail = points.details[i] if points.details else {}
        writer.writerow(row + [_cell(detail.get(key)) for key in extra])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, out.getvalue())
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str | int):  # bools too
        return str(value)
    return json.dumps(value)


# -------------------------------------------------------------------------------------------------
# Run directories


def read_json_object(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """The JSON object in `path`. A file that cannot be read, is empty, is cut off (a process killed
    while writing it) or is not a JSON object is a DataError whose message starts with `label`
    (default: the path) and names the line."""
    path = Path(path)
    label = label or str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{label}: cannot be read ({e.strerror or e})") from None
    if not data.strip():
        raise DataError(f"{label}: empty (killed while writing?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        if e.end == len(data):  # the middle of a character: the file stops there
            raise DataError(f"{label}: cut off at line {line} (killed while writing?)") from None
        raise DataError(f"{label}: not UTF-8 text (byte {data[e.start]:#04x} on line {line})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        # A prefix of a valid document fails at its end, or within its last line (an unterminated
        # string or number), and lacks the final newline that every lmx JSON file ends with.
        cut = e.pos >= len(text.rstrip()) or (not text.endswith("\n") and "\n" not in text[e.pos :])
        if cut:
            raise DataError(f"{label}: cut off at line {e.lineno} (killed while writing?)") from None
        raise DataError(f"{label}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    if not isinstance(value, dict):
        raise DataError(f"{label}: expected a JSON object, found a JSON {type(value).__name__}")
    return value


def _positive(summary: dict[str, Any], key: str, label: str) -> float:
    value = summary.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{label}: {key}={value!r} is not a positive number")
    return float(value)


def _read_run(run_dir: Path, metric: str) -> tuple[tuple[float, float, float, float, float], dict[str, Any]]:
    """(N, D, loss, C, budget) of a finished run and its details (see `_details`); a DataError
    naming the file (relative to the run directory) when its summary.json or config.json cannot be
    read or used."""
    summary = read_json_object(run_dir / "summary.json", "summary.json")
    final_eval = summary.get("final_eval")
    if not isinstance(final_eval, dict) or metric not in final_eval:
        has = f" (it has {', '.join(map(str, final_eval))})" if isinstance(final_eval, dict) and final_eval else ""
        raise DataError(f"summary.json: no final_eval[{metric!r}]{has}")
    value = final_eval[metric]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"summary.json: final_eval[{metric!r}]={value!r} is not a finite number")
    tokens = _positive(summary, "tokens", "summary.json")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise DataError("config.json: missing (a summary.json without it)")
    try:
        cfg = Config.from_dict(read_json_object(config_path, "config.json"))
    except ConfigError as e:
        raise DataError(f"config.json: {e}") from None
    definition = cfg.sweep.coord("flops_definition", "detailed")
    n = param_counts(cfg.model).by_definition(definition)
    c = flops_per_token(cfg.model, cfg.data.seq_len, definition) * tokens
    return (n, tokens, float(value), c, cfg.sweep.coord("budget", math.nan)), _details(summary, cfg)


def _details(summary: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """What a saved points file keeps of a run beyond (N, D, C, loss): the summary's steps, tokens
    and training time, every final evaluation number, the model's shape and the sweep coordinates."""
    out: dict[str, Any] = {
        "train.steps": cfg.train.steps,
        **{key: summary[key] for key in ("steps", "tokens", "params", "train_time_s") if key in summary},
    }
    out.update({k: v for k, v in summary.get("final_eval", {}).items() if isinstance(v, int | float)})
    for key in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size"):
        out[f"model.{key}"] = getattr(cfg.model, key)
    out["data.seq_len"] = cfg.data.seq_len
    out.update({f"sweep.{key}": value for key, value in cfg.sweep.coords})
    return out


def read_runs(sweep_dir: str | Path, metric: str = "eval/loss") -> Points:
    """Every finished run (a ``*/summary.json``) directly under `sweep_dir`; runs whose files cannot
    be read are left out and named in `Points.unusable`."""
    sweep_dir = Path(sweep_dir)
    rows, names, unusable, details = [], [], [], []
    for summary_path in sorted(sweep_dir.glob("*/summary.json")):
        if not summary_path.is_file():
            continue
        run_dir = summary_path.parent
        try:
            row, detail = _read_run(run_dir, metric)
        except DataError as e:
            unusable.append((run_dir.name, str(e)))
            continue
        rows.append(row)
        details.append(detail)
        names.append(run_dir.name)
    unfinished = tuple(
        sorted(p.parent.name for p in sweep_dir.glob("*/config.json") if not (p.parent / "summary.json").exists())
    )
    if not names:
        raise DataError(f"{sweep_dir}: {_no_runs(sweep_dir, metric, unfinished, unusable)}")
    N, D, loss, C, budget = (np.asarray(column, np.float64) for column in zip(*rows, strict=True))
    return Points(
        N,
        D,
        loss,
        C,
        None if np.isnan(budget).any() else budget,
        tuple(names),
        str(sweep_dir),
        unfinished,
        tuple(unusable),
        tuple(details),
    )


def _no_runs(sweep_dir: Path, metric: str, unfinished: tuple[str, ...], unusable: list[tuple[str, str]]) -> str:
    """Why a directory holds no usable run, for the error message."""
    if unusable:
        first_name, first_why = unusable[0]
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        return f"no usable finished runs: {first_name}/{first_why}{more}"
    if unfinished:
        listed = ", ".join(unfinished[:5]) + (", ..." if len(unfinished) > 5 else "")
        return f"no finished runs yet ({len(unfinished)} without summary.json: {listed})"
    if (sweep_dir / "summary.json").is_file() or (sweep_dir / "config.json").is_file():
        return "this is one run's directory; give the sweep directory that holds the runs"
    return "no runs in it (no */summary.json); expected a sweep directory of run directories, or a CSV"
