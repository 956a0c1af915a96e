"""Checkpoints of a run: one Orbax step directory per saved step, holding two items.

- ``state``: the TrainState (params, optimizer state, step, RNG, skip count), saved shard by shard;
  restored straight into the shardings of the *current* mesh, which may differ from the saving one
  (another mesh shape, or another number of processes).
- ``meta``: JSON run metadata (step, tokens, wall time, config, mesh, processes).

The data pipeline needs nothing saved: its position is the step (`lmx.data.pretrain.record_batches`).
Checkpoints written before that also hold a ``data`` item (a Grain iterator state); it is ignored.
In a multi-process run every process calls every method here (Orbax coordinates the writers); only
process 0 moves damaged checkpoints aside.

Saves are asynchronous by default: the arrays are copied off the devices, then written by a
background thread while training goes on. Orbax writes each step into a temporary directory and
renames it when complete, so a process killed mid-save leaves no half checkpoint behind. A complete
checkpoint that is later damaged (truncated or deleted files) fails to restore: it is reported,
moved aside to ``<run>/corrupt_checkpoints/`` (never deleted), and the previous one is used.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from lmx.config import CheckpointConfig
from lmx.errors import CheckpointError
from lmx.parallel.distributed import barrier


def saved_steps(directory: str | Path) -> list[int]:
    """The complete checkpoints in a run's ``checkpoints/`` directory, by step ([] when there is none).
    A step being written lives under a temporary name until it is complete, so it is not listed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


class Checkpoints:
    """The checkpoints of one run directory (``<run>/checkpoints``)."""

    def __init__(
        self,
        directory: str | Path,
        cfg: CheckpointConfig,
        log: Callable[[str], None] = print,
        keep: Sequence[int] = (),
    ) -> None:
        """`keep`: steps never deleted, beside the newest ``cfg.max_to_keep``."""
        self.directory = Path(directory).absolute()
        self.log = log
        self._saving: int | None = None  # the step of the newest save started
        preserve = None
        if keep:
            preserve = preservation.AnyPreservationPolicy(
                [preservation.LatestN(n=cfg.max_to_keep), preservation.CustomSteps(steps=list(keep))]
            )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=None if keep else cfg.max_to_keep,
                preservation_policy=preserve,
                enable_async_checkpointing=cfg.async_save,
                create=True,
                cleanup_tmp_directories=True,  # leftovers of saves cut short by a kill
            ),
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts saving (returns before the files are written when saves are asynchronous).

        A save that fails (a full disk, a lost permission), now or in the background (then it is
        reported by the next `save` or `wait`), raises CheckpointError naming the cause. Orbax writes
        each step into a temporary directory renamed when complete, so the earlier checkpoints stay
        intact and the failed step leaves nothing a resume would read.
        """
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except Exception as e:
            raise self._save_failed(step, e) from e
        self._saving = step

    def _save_failed(self, step: int | None, error: BaseException) -> CheckpointError:
        what = f"saving checkpoint {step}" if step is not None else "a checkpoint save"
        return CheckpointError(
            f"{what} in {self.directory} failed: {_cause(error)}; the complete checkpoints "
            f"(steps {self._complete_steps()}) are intact"
        )

    def _complete_steps(self) -> list[int]:
        return saved_steps(self.directory)

    def restore_latest(
        self,
        abstract_state: Any,
        check_meta: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> tuple[Any, dict[str, Any]] | None:
        """``(state, meta)`` of the newest checkpoint that restores, or None when there is none.

        `abstract_state` holds `jax.ShapeDtypeStruct`s whose shardings say where each array goes.
        `check_meta(step_dir, meta)` may raise CheckpointError for a checkpoint that is intact but does
        not fit this run (another model): that error propagates and nothing is moved, as for a
        checkpoint of parameters only (`lmx import hf`'s). Raises CheckpointError when checkpoints
        exist but none of them restores.
        """
        failures = []
        for step in reversed(self.steps()):
            try:
                meta = dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
            except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
                self._set_aside(step, e, failures)
                continue
            if meta.get("params_only"):  # lmx.hf.importer writes these: parameters without a train state
                raise CheckpointError(
                    f"{self.directory / str(step)} holds parameters only (an imported model): train from it with "
                    "objective.init_from, in a new --run-dir"
                )
            if check_meta:
                check_meta(self.directory / str(step), meta)
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )
            except Exception as e:
                self._set_aside(step, e, failures)
                continue
            return restored["state"], meta
        if failures:
            raise CheckpointError(
                f"{self.directory}: no checkpoint could be restored ({'; '.join(failures)}); "
                f"the damaged ones were moved to {self._quarantine_dir()}"
            )
        return None

    def _set_aside(self, step: int, error: Exception, failures: list[str]) -> None:
        """Reports a checkpoint that failed to restore and moves it out of the way."""
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        failures.append(f"step {step}: {reason}")
        self.log(f"warning: checkpoint {self.directory / str(step)} failed to restore ({reason})")
        self._quarantine(step)

    def restore_state(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        """``(step, state)`` of one checkpoint (the latest by default), without the data iterator."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoints")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (have {steps})")
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:
            raise CheckpointError(f"{self.directory / str(step)}: failed to restore: {type(e).__name__}: {e}") from e
        return step, restored["state"]

    def _quarantine_dir(self) -> Path:
        return self.directory.parent / "corrupt_checkpoints"

    def _quarantine(self, step: int) -> None:
        """Moves a damaged step out of the manager's way (a later save may need its number)."""
        source = self.directory / str(step)
        if source.exists() and jax.process_index() == 0:
            target = self._quarantine_dir() / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
            self.log(f"moved it to {target}")
        barrier(f"lmx/quarantine-{step}")  # the others wait until it is gone before they look again
        self._manager.reload()

    def wait(self) -> None:
        """Blocks until every started save is on disk; CheckpointError if one failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(self._saving, e) from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()


def _cause(error: BaseException) -> str:
    """The operating system's reason behind `error`, short: the innermost OSError, or the errno that
    TensorStore puts in its messages (``os_error_code='28'``); else the error's first line."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return f"[Errno {current.errno}] {os.strerror(current.errno)}"
        code = re.search(r"os_error_code='?(\d+)", str(current))
        if code:
            return f"[Errno {code.group(1)}] {os.strerror(int(code.group(1)))}"
        current = current.__cause__ or current.__context__
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
