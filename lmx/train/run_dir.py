"""A run directory's files and the rules that keep them safe across launches.

- Nothing is written until the launch is known to be valid: the config is checked against the
  previous launch's and the checkpoint is restored first, so a rejected launch leaves the directory
  byte-identical.
- A finished run (``summary.json``) is never changed silently: a relaunch with another config is
  refused, naming the changed keys, unless it is a deliberate extension (``--extend``), which keeps
  the old summary (``summary-step<N>.json``) and the old final checkpoint (``extensions.json``
  lists the steps kept).
- An interrupted run resumes with a changed config only when resume honours the change exactly:
  `RESUMABLE_KEYS`. Anything else is refused the same way.
- Every file is written atomically (`lmx.atomic`); ``metrics.jsonl`` is append-only and read with
  a torn last line tolerated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmx import atomic
from lmx.checkpoint import saved_steps
from lmx.config import Config, ModelConfig, diff_keys, flatten_keys, load_config
from lmx.errors import CheckpointError, ConfigError

# Keys a resumed run honours exactly: logging, checkpoint cadence, evaluation cadence and batch (its
# sums do not depend on it), the run's name and sweep coordinates, the loader's threads, and the mesh
# (a checkpoint restores onto any mesh and number of processes; the numbers then agree to float
# summation order).
RESUMABLE_KEYS = (
    "name",
    "log.",
    "checkpoint.",
    "eval.every_steps",
    "eval.batches",
    "eval.final_batches",
    "eval.batch_size",
    "mesh.data",
    "mesh.fsdp",
    "mesh.tensor",
    "mesh.data_hosts",
    "data.loader_threads",
    "sweep.",
)


def check_same_model(step_dir: Path, meta: dict[str, Any], cfg: Config) -> None:
    """A checkpoint of another model (or sequence length) is not this run's to resume. Settings of
    how the model computes (`ModelConfig.COMPUTE_ONLY`: dtype, attention, remat) may change, and a
    key the checkpoint's config lacks is a field added since, at its default."""
    saved = flatten_keys({"model": meta.get("config", {}).get("model", {})})
    now = flatten_keys({"model": cfg.to_dict()["model"]})
    compute_only = {f"model.{k}" for k in ModelConfig.COMPUTE_ONLY}
    changed = [k for k in diff_keys(saved, now) if k in saved and k not in compute_only]
    if saved and changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"{step_dir} was saved by a different model ({details}); "
            "train it in a new --run-dir, or restore the saved model settings"
        )


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def read_config(run_dir: str | Path) -> Config | None:
    """The config a run directory was last launched with (None without one); a damaged file is a
    ConfigError naming it."""
    path = Path(run_dir) / "config.json"
    return load_config(path) if path.is_file() else None


def describe_changes(before: Config, after: Config) -> list[str]:
    old, new = flatten_keys(before.to_dict()), flatten_keys(after.to_dict())
    return [f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in diff_keys(old, new)]


class RunDirectory:
    """The files of one run directory, for the training loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def extensions(self) -> list[dict[str, Any]]:
        path = self.path / "extensions.json"
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a readable list of extensions ({e})") from None

    def kept_steps(self) -> list[int]:
        """Checkpoints kept past checkpoint.max_to_keep: where finished runs were extended."""
        return [int(e["step"]) for e in self.extensions()]

    def check_relaunch(self, cfg: Config, extend: bool) -> list[str]:
        """Validates a launch against the directory; returns the changed keys (described) that an
        extension accepts. Raises ConfigError, touching nothing, when the launch would change a
        finished run, or resume an interrupted one inexactly, without ``extend``."""
        before = read_config(self.path)
        if before is None:
            return []
        changes = diff_keys(flatten_keys(before.to_dict()), flatten_keys(cfg.to_dict()))
        if not changes:
            return []
        described = describe_changes(before, cfg)
        steps = saved_steps(self.path / "checkpoints")
        finished = self.summary_path.is_file() and bool(steps)
        if all(resumable(k) for k in changes) or not steps:
            # A change resume honours exactly (a finished run then just says so), or nothing to
            # damage yet (no checkpoint).
            print(f"note: {self.path / 'config.json'}: config changed since the last launch: {', '.join(described)}")
            return []
        if extend:
            return described
        state = (
            f"a finished run (step {steps[-1]}, summary.json)" if finished else f"an interrupted run (step {steps[-1]})"
        )
        inexact = "" if finished else f" (resume honours changes of {', '.join(RESUMABLE_KEYS)} exactly)"
        raise ConfigError(
            f"{self.path} is {state} launched with another config: {', '.join(described)}{inexact}. "
            "Train the new config in a new --run-dir, or pass --extend to continue this run with it on purpose "
            "(the model's shapes must stay the same; the old summary.json and final checkpoint are kept)"
        )

    def begin(self, cfg: Config, step: int, extension: list[str]) -> None:
        """Records an accepted launch: the config, and for an extension of a finished run the kept
        summary and step. Called once the checkpoint has restored."""
        summary = self.read_summary() if extension else None
        if summary is not None:
            kept = self.path / f"summary-step{summary.get('steps', step)}.json"
            atomic.copy_file(self.summary_path, kept)
            # `step`: the checkpoint the extension continues from (the finished run's last one, or
            # the newest that restored), kept past checkpoint.max_to_keep.
            entry = {"step": step, "summary": kept.name, "changed": extension}
            atomic.write_json(self.path / "extensions.json", [*self.extensions(), entry])
            self.summary_path.unlink()
        atomic.write_text(self.path / "config.json", cfg.to_json() + "\n")

    def copy_tokenizer(self, source: str | Path) -> None:
        """The run's tokenizer as ``tokenizer.model`` (SentencePiece) or ``tokenizer.json`` (with the
        ``tokenizer_config.json`` beside it that names its special tokens)."""
        source = Path(source)
        if source.suffix != ".json":
            target = self.path / "tokenizer.model"
            if not target.exists():
                atomic.copy_file(source, target)
            return
        for name, path in (
            ("tokenizer_config.json", source.with_name("tokenizer_config.json")),
            ("tokenizer.json", source),
        ):
            if path.is_file() and not (self.path / name).exists():
                atomic.copy_file(path, self.path / name)

    def read_summary(self) -> dict[str, Any] | None:
        """The finished run's summary; None when there is none, or when it is unreadable (a kill
        while an older lmx wrote it in place): the final evaluation then runs again and rewrites it."""
        if not self.summary_path.is_file():
            return None
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            print(f"note: {self.summary_path} is unreadable ({e}); evaluating the final checkpoint again")
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic.write_json(self.summary_path, summary)
