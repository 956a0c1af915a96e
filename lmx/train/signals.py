"""Preemption: SIGTERM or SIGINT asks the trainer to stop after the current step.

The handler only sets a flag; the loop checks it between steps, saves a checkpoint and returns, so a
signal never interrupts a step or a save halfway. A second SIGINT (Ctrl-C twice) interrupts at once.

In a multi-process run every process must stop at the same step, even when only one of them got
the signal. JAX's runtime catches SIGTERM itself and agrees on a step with the others
(`multihost_utils.reached_preemption_sync_point`, the max of their steps plus one); SIGINT is turned
into a SIGTERM to this process so that it goes through the same agreement.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into a request to stop (`should_stop`).

    `sync_point`: in a multi-process run, `jax.experimental.multihost_utils.reached_preemption_sync_point`
    (passed in, so that the sweep launcher, which uses this too, never imports JAX). Outside the
    main thread (where Python cannot install handlers) it installs nothing.
    """

    def __init__(self, sync_point: Callable[[int], bool] | None = None) -> None:
        self.signal_name: str | None = None
        self.multiprocess = sync_point is not None
        self._sync_point = sync_point
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after `step`, the same answer on every process. Call it once
        after every step (the processes' agreement counts on it)."""
        if self._sync_point is None:
            return self.requested
        return self._sync_point(step)

    @property
    def reason(self) -> str:
        """Why the run stops, for its log line."""
        if self.requested:
            return f"received {self.signal_name}"
        return "a process of this run received SIGTERM"  # (the runtime does not say which)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self.multiprocess:  # the runtime's SIGTERM notice starts the agreement on a step
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            # Many processes: SIGTERM stays with JAX's runtime, which shares it with the others.
            signals = (signal.SIGINT,) if self.multiprocess else (signal.SIGTERM, signal.SIGINT)
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
