"""Where a run's numbers go: a console progress bar, ``metrics.jsonl`` and wandb.

Every sink takes rows ``(step, {name: number})`` of plain Python numbers (the trainer fetches them
from the devices once per log step). ``metrics.jsonl`` is the record that scaling fits read; wandb
is optional and only ever a copy of it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from lmx import atomic
from lmx.config import Config, WandbConfig

Row = dict[str, float]


class Sink(Protocol):
    def write(self, step: int, row: Row) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per row: ``{"step": s, ...}``, flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self._file = self.path.open("a")
        if torn:  # a row cut off by a kill: end its line, so the next row is not glued to it
            self._file.write("\n")

    def write(self, step: int, row: Row) -> None:
        self._file.write(json.dumps({"step": step, **{k: _plain(v) for k, v in row.items()}}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings a reader can still parse with float()."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics file (a torn last line, from a killed process, is skipped)."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_jsonl(path: str | Path, last_step: int) -> int:
    """Drops the rows after `last_step` (logged by a run that died before its next checkpoint), so a
    resumed run does not log those steps twice. Returns how many rows were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    if len(kept) == len(lines):
        return 0
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(lines) - len(kept)


class ProgressSink:
    """A tqdm bar over the run's steps: loss and tokens/s beside it, ETA from tqdm."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not enabled, mininterval=1.0
        )

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def write(self, step: int, row: Row) -> None:
        shown = {k: row[k] for k in ("loss", "eval/loss", "eval/bits_per_byte") if k in row}
        if "tokens_per_s" in row:
            shown["tok/s"] = row["tokens_per_s"]
        if shown:
            self.bar.set_postfix({k: f"{v:,.0f}" if k == "tok/s" else f"{v:.4f}" for k, v in shown.items()})

    def message(self, text: str) -> None:
        """A line printed above the bar (or plainly when the bar is disabled)."""
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


class WandbSink:
    """Logs rows to a wandb run. The run id is kept in ``<run>/wandb_run_id`` so that a resumed
    run continues the same wandb run; the resolved config is the run's config. A sweep's run joins
    the group named after its sweep, and its sweep coordinates become top-level config keys
    (``sweep/budget``, ...) so the wandb UI can group and filter by them."""

    def __init__(self, cfg: WandbConfig, run_dir: str | Path, config: Config) -> None:
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity or None,
            group=cfg.group or config.sweep.name or None,
            tags=list(cfg.tags) or None,
            name=config.name,
            mode=cfg.mode,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config={**config.to_dict(), **{f"sweep/{k}": v for k, v in config.sweep.coords}},
        )
        atomic.write_text(id_file, run_id + "\n")

    def write(self, step: int, row: Row) -> None:
        self.run.log(row, step=step)

    def close(self) -> None:
        self.run.finish()


def make_sinks(cfg: Config, run_dir: str | Path, start_step: int) -> tuple[ProgressSink, list[Sink]]:
    """The progress bar and the record sinks (metrics.jsonl, and wandb unless disabled)."""
    run_dir = Path(run_dir)
    sinks: list[Sink] = [JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.log.wandb.mode != "disabled":
        sinks.append(WandbSink(cfg.log.wandb, run_dir, cfg))
    return ProgressSink(cfg.train.steps, start_step, cfg.log.progress), sinks


def write_row(sinks: list[Sink], progress: ProgressSink | None, step: int, row: Row) -> None:
    """`row` to every sink, and to the progress bar's postfix."""
    for sink in sinks:
        sink.write(step, row)
    if progress:
        progress.write(step, row)


def eval_row(metrics: dict[str, float]) -> dict[str, float]:
    """Evaluation metrics as logged: ``eval/NAME``."""
    return {f"eval/{k}": v for k, v in metrics.items()}
