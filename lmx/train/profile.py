"""`lmx train --profile START:STOP`: a `jax.profiler` trace of steps START to STOP - 1.

Steps are numbered as metrics.jsonl numbers them (the first step is 1), and the window is half-open
like a Python range: ``--profile 10:13`` traces steps 10, 11 and 12. The trace goes to
``RUN_DIR/profile/plugins/profile/<time>/``: ``<host>.xplane.pb`` for TensorBoard's profile plugin and
``<host>.trace.json.gz``, a Chrome trace Perfetto opens. Tracing starts just before the first step
of the window and stops once its last step has finished on the devices, so the trace holds whole
steps and no compilation (the loop compiles the step before it starts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from lmx.errors import ConfigError


def parse_window(text: str) -> tuple[int, int]:
    """``"START:STOP"`` -> (START, STOP), with 1 <= START < STOP."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"--profile {text!r}: expected START:STOP, two step numbers such as 10:13") from None
    if not 1 <= start < stop:
        raise ConfigError(f"--profile {text!r}: needs 1 <= START < STOP (the steps START to STOP - 1 are traced)")
    return start, stop


class ProfiledSteps:
    """Calls ``step_fn`` and traces the calls that run the steps of the window.

    `done` is the number of steps finished before the first call (a resumed run's step). `close`
    stops a trace the run left open (it ended or was stopped inside the window).
    """

    def __init__(self, step_fn: Callable, window: tuple[int, int], directory: Path, done: int) -> None:
        self.step_fn, self.window, self.directory, self.step = step_fn, window, directory, done
        self.tracing = False

    def __call__(self, *args: Any) -> Any:
        self.step += 1  # the step this call runs
        start, stop = self.window
        if not self.tracing and start <= self.step < stop:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.tracing = True
        out = self.step_fn(*args)
        if self.tracing and self.step >= stop - 1:
            self.close(out)
        return out

    def close(self, outputs: Any = None) -> None:
        if self.tracing:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.tracing = False
