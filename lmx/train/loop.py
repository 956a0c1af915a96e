"""The training loop: the imperative shell around the pure, compiled step.

`train(cfg, run_dir)` prepares data if needed, restores the latest valid checkpoint (or initialises),
then loops: batch -> compiled step, with logging every ``log.every_steps``, evaluation every
``eval.every_steps``, checkpoints every ``checkpoint.every_steps`` and at the end, and
``summary.json`` once the run completes. Between log steps the loop never waits for the devices:
step metrics stay on device until the next log step fetches them all at once.

A run directory holds ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``summary.json``,
``tokenizer.model`` and, with wandb on, ``wandb/`` and ``wandb_run_id``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from jax.experimental import multihost_utils

from lmx.checkpoint import Checkpoints
from lmx.checkpoint.init_from import load_init_params, zero_new_heads
from lmx.config import Config
from lmx.errors import ConfigError, NonFiniteError
from lmx.model.flops import flops_per_token_executed, model_flops_utilization, param_counts
from lmx.objectives.base import LossFn
from lmx.objectives.registry import objective_of
from lmx.parallel.hardware import peak_flops
from lmx.parallel.mapping import eval_batch_size, step_batch_sharding
from lmx.train.lock import RunLock
from lmx.train.metrics import Row, eval_row, make_sinks, truncate_jsonl, write_row
from lmx.train.profile import ProfiledSteps
from lmx.train.run_dir import RunDirectory, check_same_model
from lmx.train.setup import TrainSetup, setup_training
from lmx.train.signals import StopRequest
from lmx.train.state import TrainState

Status = Literal["completed", "preempted"]


@dataclasses.dataclass(frozen=True)
class RunResult:
    status: Status
    step: int
    summary: dict[str, Any] | None  # set when the run completed


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    devices: Sequence[jax.Device] | None = None,
    make_loss: Callable[[TrainSetup], LossFn] | None = None,
    extend: bool = False,
    profile: tuple[int, int] | None = None,
) -> RunResult:
    """Trains `cfg` in `run_dir`, resuming from its latest checkpoint if there is one.

    `make_loss` builds a custom loss from the setup (its model); the default is the loss of the
    config's objective (`lmx.objectives`). `profile` = (START, STOP) traces those steps
    (`lmx.train.profile`). Returns when the run completes or a SIGTERM/SIGINT stopped it (after saving).
    Raises NonFiniteError under ``train.nonfinite=stop`` and ConfigError/DataError/
    CheckpointError for bad input, and ConfigError when `run_dir` holds a finished run (or an
    interrupted one that cannot resume exactly) of another config, unless `extend` (`RunDirectory`).
    """
    return Trainer(cfg, run_dir, devices=devices, make_loss=make_loss, extend=extend, profile=profile).run()


class Trainer:
    """One run: everything `train` sets up, and the loop. Use `train` unless you need the parts."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        devices: Sequence[jax.Device] | None = None,
        make_loss: Callable[[TrainSetup], LossFn] | None = None,
        extend: bool = False,
        profile: tuple[int, int] | None = None,
    ) -> None:
        self.cfg, self.profile = cfg, profile
        self.run_dir = Path(run_dir)
        self.files = RunDirectory(self.run_dir)
        self.is_lead = jax.process_index() == 0
        self.say: Callable[[str], None] = print if self.is_lead else (lambda message: None)  # one voice per run
        self.lock = None
        self.created = created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {self.run_dir}: {e.strerror or e}") from None
        try:
            if self.is_lead:
                self.lock = RunLock(self.run_dir).acquire()
            self.extension = self.files.check_relaunch(cfg, extend) if self.is_lead else []
            self._set_up(devices, make_loss)
        except BaseException:
            self._release(remove_if_empty=created)
            raise

    def _release(self, remove_if_empty: bool = False) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if remove_if_empty:  # a launch that failed validation leaves no trace
            (self.run_dir / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()

    def _set_up(self, devices: Sequence[jax.Device] | None, make_loss: Callable[[TrainSetup], LossFn] | None) -> None:
        cfg = self.cfg
        self.setup = setup_training(cfg, devices, init=False)
        self.mesh = self.setup.mesh
        self.batch_sharding = step_batch_sharding(self.mesh)
        eval_batch_size(cfg, self.mesh)  # a bad eval.batch_size fails now, not at the first evaluation
        objective = objective_of(cfg)
        self.online = objective.online
        # A reference model (preference): the init_from parameters, frozen, sharded like the policy.
        reference = None
        if objective.reference(cfg) != "none":
            # A head the source lacks (PPO's value head) is zeros in the reference: it only scores tokens.
            reference = self._load_params(zero_new_heads(self.setup.abstract_state.params), "reference model")
        self.task = objective.make_task(cfg, self.mesh, self.setup.model, reference, self.say)
        # Passed to every step when the reference runs in the step (else freed once precomputed).
        self.frozen = reference if objective.reference(cfg) == "in_step" else None
        self.checkpoints = Checkpoints(
            self.run_dir / "checkpoints", cfg.checkpoint, self.say, keep=self.files.kept_steps()
        )
        self._last_saved: int | None = None  # the newest step saved (or restored) by this launch
        self.loss_fn = make_loss(self.setup) if make_loss else None

        self.tokens_per_step = self.task.tokens_per_step
        # Matmul FLOPs a training step executes per processed token (lmx.model.flops "executed"); a
        # reference forward in the step adds a third (forward = 1/3 of forward + backward).
        self.flops_per_token = flops_per_token_executed(cfg.model, cfg.data.seq_len) * (4 / 3 if self.frozen else 1)
        self.peak_flops = peak_flops(self.mesh.devices.flatten().tolist(), cfg.log.peak_flops)

    # ---------------------------------------------------------------------------------------------
    # Setup pieces

    def _begin(self, step: int) -> None:
        """The launch is valid and its state restored: record it in the run directory."""
        if not self.is_lead:
            return
        self.files.begin(self.cfg, step, self.extension)
        tokenizer = self.task.tokenizer
        if tokenizer and tokenizer.path:
            self.files.copy_tokenizer(tokenizer.path)
        if step == 0:  # rows of an earlier launch that saved no checkpoint: this one redoes them
            truncate_jsonl(self.run_dir / "metrics.jsonl", 0)

    def _load_params(self, target_params: Any, role: str) -> Any:
        """The ``objective.init_from`` run's parameters, in the shardings of `target_params`."""
        params, source, new = load_init_params(self.cfg.objective.init_from_run(), target_params)
        fresh = f"; new, initialised fresh: {', '.join(new)}" if new else ""
        self.say(f"{role}: parameters of {source.run_dir} at step {source.step}{fresh}")
        return params

    def _restore_or_init(self) -> tuple[TrainState, float]:
        """The state to start from and the training wall time spent before this launch."""
        restored = self.checkpoints.restore_latest(self.setup.abstract_state, self._check_meta)
        if restored is None:
            state = self.setup.init_state()
            if self.cfg.objective.init_from_run():  # parameters only: the optimizer starts fresh
                state = state.replace(params=self._load_params(state.params, "initial parameters"))
            return state, 0.0
        state, meta = restored
        step = int(meta["step"])
        self.say(f"resumed from {self.checkpoints.directory / str(step)} (step {step})")
        if self.is_lead:
            dropped = truncate_jsonl(self.run_dir / "metrics.jsonl", step)
            if dropped:
                self.say(f"dropped {dropped} metrics rows logged after step {step} by the interrupted run")
        return state, float(meta.get("train_time_s", 0.0))

    def _check_meta(self, step_dir: Path, meta: dict[str, Any]) -> None:
        check_same_model(step_dir, meta, self.cfg)

    def _compile(self, state: TrainState) -> tuple[Callable, float]:
        """Compiles the step once, before the loop (so no step is timed with its compilation)."""
        step_fn = self.setup.make_step(self.loss_fn, with_frozen=self.frozen is not None)
        example = {
            k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
            for k, (shape, dtype) in self.task.batch_spec.items()
        }
        start = time.perf_counter()
        compiled = step_fn.lower(state, example, *self._frozen_args()).compile()
        return compiled, time.perf_counter() - start

    def _frozen_args(self) -> tuple[Any, ...]:
        return () if self.frozen is None else (self.frozen,)

    def _global_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        spec = self.task.batch_spec
        return {
            k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v, spec[k][1]))
            for k, v in host_batch.items()
            if k in spec
        }

    # ---------------------------------------------------------------------------------------------
    # The loop

    def run(self) -> RunResult:
        try:
            return self._run()
        finally:  # a launch that failed before writing anything leaves no trace either
            self._release(remove_if_empty=self.created and not (self.run_dir / "config.json").exists())

    def _run(self) -> RunResult:
        cfg = self.cfg
        total = cfg.train.steps
        try:
            state, time_before = self._restore_or_init()
            step = int(jax.device_get(state.step))
            # The data resumes at the step alone (`lmx.data.pretrain.record_batches`); read before
            # `_begin` writes anything, so data that cannot make a batch leaves the directory as it was.
            # An online objective (RL) samples each batch from the current parameters instead.
            self.data_iterator = None if self.online else iter(self.task.train_batches(start_step=step))
        except BaseException:
            self.checkpoints.close()
            raise
        summary = self.files.read_summary() if step >= total else None
        if summary is not None:
            self.say(f"{self.run_dir}: already complete at step {step}")
            self.checkpoints.close()
            return RunResult("completed", step, summary)
        self._begin(step)

        step_fn, compile_s = self._compile(state)
        if self.profile:
            step_fn = ProfiledSteps(step_fn, self.profile, self.run_dir / "profile", step)
        frozen = self._frozen_args()
        progress, sinks = make_sinks(cfg, self.run_dir, step) if self.is_lead else (None, [])
        log = progress.message if progress else self.say
        counts = param_counts(cfg.model)
        log(
            f"{cfg.name}: {counts.total:,} parameters, mesh {dict(self.mesh.shape)}, "
            f"{self.tokens_per_step:,} tokens/step, compiled in {compile_s:.1f} s"
        )
        self._last_saved = step if step > 0 else None
        pending: list[dict[str, jax.Array]] = []  # device metrics of the steps since the last log
        window_start, eval_time, launch = time.perf_counter(), 0.0, time.perf_counter()
        status: Status = "completed"
        # Many processes stop at a step they agree on (the runtime's preemption sync point).
        sync_point = multihost_utils.reached_preemption_sync_point if jax.process_count() > 1 else None
        try:
            with StopRequest(sync_point) as stop:
                while step < total:
                    if self.online:
                        state, metrics = self._online_step(step_fn, state, step, frozen)
                    else:
                        state, metrics = step_fn(state, self._global_batch(next(self.data_iterator)), *frozen)
                    step += 1
                    pending.append(metrics)
                    if progress:
                        progress.advance()
                    last = step == total
                    stopping = stop.should_stop(step)
                    if step % cfg.log.every_steps == 0 or last or stopping:
                        row = self._train_row(step, pending, state, window_start + eval_time)
                        write_row(sinks, progress, step, row)
                        pending, window_start, eval_time = [], time.perf_counter(), 0.0
                    if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and not last:
                        start = time.perf_counter()
                        result = self.task.evaluate(state.params, cfg.eval.batches, self.frozen)
                        write_row(sinks, progress, step, eval_row(result))
                        log(f"step {step}: {self.task.describe(result)}")
                        eval_time += time.perf_counter() - start
                    every = cfg.checkpoint.every_steps
                    if (every and step % every == 0) or last or stopping:
                        self._check_finite(step, pending)
                        train_time = time_before + time.perf_counter() - launch
                        self._save(step, state, train_time)
                    if stopping and not last:
                        status = "preempted"
                        self.checkpoints.wait()
                        log(
                            f"{stop.reason}: saved a checkpoint at step {step} in "
                            f"{self.checkpoints.directory}; run the same command again to resume"
                        )
                        break
                # Still under StopRequest: a signal during the final evaluation lets it finish (the
                # run is complete) instead of killing the process before summary.json.
                self.checkpoints.wait()
                train_time = time_before + time.perf_counter() - launch
                summary = None
                if status == "completed":
                    summary = self._finish(state, step, train_time, compile_s, log)
                    write_row(sinks, progress, step, summary["final_eval"])
                return RunResult(status, step, summary)
        finally:
            if isinstance(step_fn, ProfiledSteps):
                step_fn.close(state)
            self.checkpoints.close()
            if progress:
                progress.close()
            for sink in sinks:
                sink.close()

    def _online_step(self, step_fn: Callable, state: TrainState, step: int, frozen: tuple) -> tuple[TrainState, dict]:
        """A step of an online objective: its batch sampled from the current parameters, then the
        update, waited for (the next rollout needs its parameters anyway) so that it is timed."""
        host, rollout_metrics = self.task.next_batch(state.params, step)
        start = time.perf_counter()
        state, metrics = step_fn(state, self._global_batch(host), *frozen)
        jax.block_until_ready(metrics)
        return state, {**metrics, **rollout_metrics, "update_s": time.perf_counter() - start}

    def _train_row(self, step: int, pending: list[dict[str, jax.Array]], state: TrainState, since: float) -> Row:
        """Fetches the window's metrics (the loop's only regular sync) and builds the log row.

        Throughput counts the time from `since` until the window's last step has finished.
        """
        fetched, skipped = jax.device_get((pending, state.skipped))
        seconds = time.perf_counter() - since
        self._check_finite(step, fetched)
        last = {k: float(v) for k, v in fetched[-1].items() if k not in ("tokens", "nonfinite")}
        if not self.cfg.train.z_loss:
            last.pop("z_loss", None)
        tokens_per_s = len(fetched) * self.tokens_per_step / max(seconds, 1e-9)
        row = {  # the step's own metrics (loss, grad_norm, lr and a custom loss's stats), then rates
            **last,
            "tokens_seen": step * self.tokens_per_step,
            "tokens_per_s": tokens_per_s,
            "flops_per_s": tokens_per_s * self.flops_per_token,
            "skipped_steps": int(skipped),
        }
        mfu = model_flops_utilization(tokens_per_s, self.flops_per_token, self.peak_flops)
        if mfu is not None:
            row["mfu"] = mfu
        return row

    def _check_finite(self, step: int, pending: list[dict[str, Any]]) -> None:
        """Under ``train.nonfinite=stop``, raises for the first non-finite step of the window."""
        if self.cfg.train.nonfinite != "stop" or not pending:
            return
        fetched = jax.device_get(pending)  # a no-op for metrics the log step already fetched
        flags = [float(m["nonfinite"]) for m in fetched]
        if any(flags):
            first = flags.index(1.0)
            bad = fetched[first]
            bad_step = step - len(pending) + 1 + first
            kept = f"step {self._last_saved}" if self._last_saved else "none"
            raise NonFiniteError(
                f"step {bad_step}: loss {float(bad['loss'])} / gradient norm {float(bad['grad_norm'])} is not "
                f"finite (train.nonfinite=stop). Last good checkpoint: {kept} in {self.checkpoints.directory}; "
                "nothing after it was saved. Lower optim.learning_rate or set train.nonfinite=skip."
            )

    def _save(self, step: int, state: TrainState, train_time: float) -> None:
        if step == self._last_saved:
            return
        meta = {
            "step": step,
            "tokens_seen": step * self.tokens_per_step,
            "train_time_s": train_time,
            "mesh": dict(self.mesh.shape),
            "processes": jax.process_count(),
            "config": self.cfg.to_dict(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.checkpoints.save(step, state, meta)
        self._last_saved = step

    def _finish(
        self, state: TrainState, step: int, train_time: float, compile_s: float, log: Callable
    ) -> dict[str, Any]:
        """Final evaluation and summary.json."""
        result = self.task.evaluate(state.params, self.cfg.eval.final_batches, self.frozen)
        counts = param_counts(self.cfg.model)
        tokens = step * self.tokens_per_step
        summary = {
            "name": self.cfg.name,
            "steps": step,
            "tokens": tokens,
            "params": counts.total,
            "non_embedding_params": counts.non_embedding,
            "flops_per_token": self.flops_per_token,
            "flops": self.flops_per_token * tokens,
            "train_time_s": train_time,
            "compile_s": compile_s,
            "tokens_per_s": tokens / train_time if train_time else None,
            "skipped_steps": int(jax.device_get(state.skipped)),
            "objective": self.cfg.objective.kind,
            "final_eval": eval_row(result),
            **self.task.summary(),
        }
        if self.is_lead:
            self.files.write_summary(summary)
        described = self.task.describe(result)
        log(f"done: step {step}, {described}, {train_time:.0f} s of training; summary in {self.run_dir}")
        return summary
