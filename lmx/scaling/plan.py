"""A sweep's plan before anything runs: what each run costs, and how long it should take.

The estimated time of a run is its FLOPs over a measured FLOP/s: timed training steps of that very
model shape (`measure_flops_per_s`, a few seconds per shape on CPU), or the rate that the sweep's
finished runs achieved, or a rate the user gives.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lmx.config import Config
from lmx.errors import ConfigError, DataError
from lmx.model.flops import FlopsDefinition, flops_per_token, param_counts, tokens_per_step
from lmx.scaling.points import read_json_object
from lmx.scaling.sweep import Sweep, SweepRun


@dataclasses.dataclass(frozen=True)
class PlanRow:
    run: str
    params: int  # under the sweep's FLOPs definition
    tokens: int
    flops: float
    steps: int
    seconds: float | None  # estimated; None when no throughput is known
    memory: int | None = None  # bytes per device (lmx.scaling.memory); None when not estimated

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


def shape_key(cfg: Config) -> str:
    """Runs with the same key run the same compiled step (same speed per step)."""
    plain = cfg.to_dict()
    shape = [plain["model"], cfg.data.seq_len, cfg.train.batch_size, cfg.train.micro_batches, plain["mesh"]]
    return json.dumps(shape, sort_keys=True)


def measure_flops_per_s(cfg: Config, definition: FlopsDefinition, steps: int = 3) -> float:
    """FLOP/s (under `definition`) of `cfg`'s compiled training step on this machine's devices:
    the median of `steps` timed steps after one compiling step, on random tokens."""
    import numpy as np

    from lmx.train.setup import setup_training, synthetic_batch

    setup = setup_training(cfg)
    step = setup.make_step()
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    state, metrics = step(setup.state, batch)
    float(metrics["loss"])  # waits for the compiling step
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        float(metrics["loss"])
        times.append(time.perf_counter() - start)
    per_step = float(np.median(times))
    return flops_per_token(cfg.model, cfg.data.seq_len, definition) * tokens_per_step(cfg) / per_step


def finished_flops_per_s(
    sweep_dir: str | Path, definition: FlopsDefinition, log: Callable[[str], None] = print
) -> dict[str, float]:
    """FLOP/s that finished runs under `sweep_dir` achieved, by `shape_key` (from summary.json). A
    run whose summary.json or config.json cannot be read (cut off by a killed process, say) is left
    out with a note through `log` naming the file."""
    rates: dict[str, float] = {}
    for summary_path in sorted(Path(sweep_dir).glob("*/summary.json")):
        config_path = summary_path.with_name("config.json")
        if not config_path.exists() or not summary_path.is_file():
            continue
        try:
            summary = read_json_object(summary_path)
            seconds, tokens = summary.get("train_time_s"), summary.get("tokens")
            if not (_positive(seconds) and _positive(tokens)):
                continue
            try:
                cfg = Config.from_dict(read_json_object(config_path))
            except ConfigError as e:
                raise DataError(f"{config_path}: {e}") from None
        except DataError as e:
            log(f"note: {e}; its run's FLOP/s is not used for the estimates")
            continue
        per_token = flops_per_token(cfg.model, cfg.data.seq_len, definition)
        rates[shape_key(cfg)] = per_token * tokens / seconds
    return rates


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def plan(
    sweep: Sweep,
    runs: Sequence[SweepRun],
    flops_per_s: dict[str, float] | float | None = None,
    devices: int | None = None,
    platform: str = "cpu",
) -> list[PlanRow]:
    """One row per run. `flops_per_s`: one rate for all runs, or rates by `shape_key`. Memory per
    device is estimated for `devices` (filling a mesh's -1) on `platform`; with no `devices`, only
    for runs whose mesh names every size."""
    from lmx.scaling.memory import estimate_memory

    rows = []
    for run in runs:
        cfg = run.config
        try:
            memory: int | None = estimate_memory(cfg, devices, platform).total
        except ConfigError:  # a mesh or batch that does not fit: the run itself will say why
            memory = None
        tokens = tokens_per_step(cfg) * cfg.train.steps
        flops = flops_per_token(cfg.model, cfg.data.seq_len, sweep.flops) * tokens
        rate = flops_per_s.get(shape_key(cfg)) if isinstance(flops_per_s, dict) else flops_per_s
        rows.append(
            PlanRow(
                run=run.name,
                params=param_counts(cfg.model).by_definition(sweep.flops),
                tokens=tokens,
                flops=flops,
                steps=cfg.train.steps,
                seconds=flops / rate if rate else None,
                memory=memory,
            )
        )
    return rows


def format_plan(sweep: Sweep, rows: Sequence[PlanRow]) -> str:
    """The plan as an aligned text table with a total line."""
    from lmx.scaling.memory import format_bytes

    header = (
        "run",
        f"params ({sweep.flops})",
        "tokens",
        "tokens/param",
        f"FLOPs ({sweep.flops})",
        "steps",
        "est. time",
        "memory/device",
    )
    table = [header]
    for r in rows:
        table.append(
            (
                r.run,
                f"{r.params:,}",
                f"{r.tokens:,}",
                f"{r.tokens_per_param:.1f}",
                f"{r.flops:.3g}",
                f"{r.steps:,}",
                format_duration(r.seconds),
                "-" if r.memory is None else format_bytes(r.memory),
            )
        )
    known = [r.seconds for r in rows if r.seconds is not None]
    total = format_duration(sum(known)) if len(known) == len(rows) else "-"
    table.append(
        (
            "total",
            "",
            f"{sum(r.tokens for r in rows):,}",
            "",
            f"{sum(r.flops for r in rows):.3g}",
            f"{sum(r.steps for r in rows):,}",
            total,
            "",
        )
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0 or i == len(table) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    """``"153 ms"``, ``"1.39 s"``, ``"12.3 min"``, ``"19.3 h"``; ``"-"`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
