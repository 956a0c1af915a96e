"""The trainer loop, in process: run directories, resume, damaged checkpoints, mesh changes,
non-finite policies, wandb, evaluation. Process-level tests (kill, SIGTERM) are in test_preemption."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from lmx.checkpoint import Checkpoints
from lmx.cli import main
from lmx.config import Config, SweepConfig
from lmx.errors import CheckpointError, NonFiniteError
from lmx.train.loop import train
from lmx.train.metrics import read_jsonl
from lmx.train.setup import setup_training


def final_params(run_dir: Path, cfg: Config, mesh: dict | None = None):
    """The latest checkpoint's params, restored on a (2,2,2) mesh unless another is given."""
    mesh = mesh or {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
    setup = setup_training(cfg.replace(**mesh), init=False)
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.checkpoint)
    try:
        step, state = checkpoints.restore_state(setup.abstract_state)
    finally:
        checkpoints.close()
    return step, jax.device_get(state.params)


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_run_directory_holds_config_metrics_checkpoints_and_summary(full_run):
    cfg, run_dir, result = full_run
    assert result.status == "completed" and result.step == 30
    assert Config.from_json((run_dir / "config.json").read_text()) == cfg
    assert (run_dir / "tokenizer.model").is_file()
    assert Checkpoints(run_dir / "checkpoints", cfg.checkpoint).steps() == [10, 20, 30]
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 31))
    for key in ("grad_norm", "lr", "tokens_per_s", "flops_per_s", "mfu", "tokens_seen", "skipped_steps"):
        assert key in train_rows[-1]
    assert train_rows[-1]["tokens_seen"] == 30 * 16 * 64
    eval_rows = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in eval_rows] == [10, 20, 30]
    assert eval_rows[1]["eval/loss"] < eval_rows[0]["eval/loss"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result.summary
    final = summary["final_eval"]
    assert final["eval/bits_per_byte"] == pytest.approx(
        final["eval/loss"] * final["eval/tokens"] / np.log(2) / final["eval/bytes"]
    )
    assert summary["tokens"] == 30 * 16 * 64 and summary["flops"] == summary["flops_per_token"] * summary["tokens"]
    assert summary["skipped_steps"] == 0
    assert final["eval/loss"] < summary["unigram_loss"]


def test_completed_run_is_not_trained_again(full_run, capsys):
    cfg, run_dir, result = full_run
    again = train(cfg, run_dir)
    assert again.step == 30 and again.summary == result.summary
    assert "already complete" in capsys.readouterr().out


def test_truncated_latest_checkpoint_falls_back_to_the_previous(full_run, loop_config_file, tmp_path, capsys):
    cfg, full_dir, _ = full_run
    run_dir = tmp_path / "run"
    train(cfg.replace(**{"train.steps": 20}), run_dir)
    data_files = [p for p in (run_dir / "checkpoints" / "20" / "state").rglob("*") if p.is_file() and p.stat().st_size]
    for path in data_files:  # cut every array file in half, as a full disk or a torn copy would
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capsys.readouterr()
    result = train(cfg, run_dir, extend=True)  # a finished 20-step run, continued to 30 on purpose
    out = capsys.readouterr().out
    assert "checkpoints/20 failed to restore" in out and "resumed from" in out and "(step 10)" in out
    assert list((run_dir / "corrupt_checkpoints").iterdir())  # moved aside, not deleted
    assert result.step == 30
    assert_trees_equal(final_params(run_dir, cfg)[1], final_params(full_dir, cfg)[1])
    assert losses(run_dir) == losses(full_dir)  # rows 11-20 of the first launch were replaced


def test_resume_on_another_mesh_continues_with_the_same_losses(full_run, tmp_path):
    cfg, full_dir, _ = full_run
    run_dir = tmp_path / "run"
    train(cfg.replace(**{"train.steps": 10, "mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1}), run_dir)
    train(cfg.replace(**{"train.steps": 20}), run_dir, extend=True)  # saved on (8,1,1), resumed on (2,2,2)
    resumed, reference = losses(run_dir), losses(full_dir)
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5), step
    assert final_params(run_dir, cfg)[0] == 20


def test_nonfinite_stop_keeps_the_last_good_checkpoint(full_run, tmp_path):
    cfg, _, _ = full_run
    run_dir = tmp_path / "run"
    train(cfg.replace(**{"train.steps": 10}), run_dir)
    _, good = final_params(run_dir, cfg)
    # A learning rate this large blows the parameters up within a step or two: a real divergence.
    diverging = cfg.replace(**{"optim.learning_rate": 1e30, "checkpoint.every_steps": 5, "log.every_steps": 5})
    with pytest.raises(NonFiniteError, match=r"step 1[1-5]: .* not finite .* Last good checkpoint: step 10"):
        train(diverging, run_dir, extend=True)
    assert Checkpoints(run_dir / "checkpoints", cfg.checkpoint).steps() == [10]
    assert_trees_equal(final_params(run_dir, cfg)[1], good)


def test_nonfinite_skip_drops_the_updates_and_counts_them(full_run, tmp_path):
    cfg, _, _ = full_run
    run_dir = tmp_path / "run"
    train(cfg.replace(**{"train.steps": 10}), run_dir)
    diverging = cfg.replace(**{"optim.learning_rate": 1e30, "train.nonfinite": "skip", "train.steps": 20})
    result = train(diverging, run_dir, extend=True)
    assert result.status == "completed"
    skipped = result.summary["skipped_steps"]
    assert 1 <= skipped <= 10
    assert losses(run_dir)[20] != losses(run_dir)[10]
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "skipped_steps" in r]
    assert rows[-1]["skipped_steps"] == skipped
    _, params = final_params(run_dir, cfg)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_wandb_offline_writes_a_run_and_resumes_it(full_run, tmp_path):
    cfg, _, _ = full_run
    run_dir = tmp_path / "run"
    offline = {"log.wandb.mode": "offline", "log.wandb.tags": "a,b", "train.steps": 10}
    # A sweep's run: wandb groups it under the sweep's name, with its coordinates as config keys.
    sweep = SweepConfig(name="wandb-sweep", coords=(("budget", 1e12), ("model", "L2-d64")))
    train(dataclasses.replace(cfg.replace(**offline), sweep=sweep), run_dir)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    record = next(runs[0].glob("*.wandb")).read_bytes()
    for key in (
        b"loss",
        b"tokens_per_s",
        b"eval/bits_per_byte",
        b"d_model",
        b"wandb-sweep",
        b"sweep/budget",
        b"L2-d64",
    ):
        assert key in record
    train(cfg.replace(**{**offline, "train.steps": 20}), run_dir, extend=True)
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one folder per launch, one id


def test_wandb_disabled_writes_nothing(full_run):
    _, run_dir, _ = full_run
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_run_id").exists()


def test_eval_command_scores_a_run(full_run, capsys, monkeypatch):
    _, run_dir, result = full_run
    monkeypatch.chdir(run_dir.parent)  # a path relative to the working directory, as users type it
    assert main(["eval", run_dir.name, "--batches", "4"]) == 0
    out = capsys.readouterr().out
    assert "step 30, validation:" in out
    written = json.loads((run_dir / "eval-validation-step30.json").read_text())
    # The run's own final evaluation used the same 4 batches and the same params.
    assert written["loss"] == pytest.approx(result.summary["final_eval"]["eval/loss"], rel=1e-6)


def test_eval_command_on_a_directory_without_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_copying_a_run_directory_keeps_it_resumable(full_run, tmp_path):
    cfg, run_dir, _ = full_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    step, params = final_params(copy, cfg, {"mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1})
    assert step == 30
    assert_trees_equal(params, final_params(run_dir, cfg)[1])


def test_resuming_with_another_model_fails_clearly_and_moves_nothing(full_run, tmp_path):
    cfg, full_dir, _ = full_run
    run_dir = tmp_path / "run"
    shutil.copytree(full_dir, run_dir)
    with pytest.raises(
        CheckpointError, match=r"checkpoints/30 was saved by a different model \(model.d_ff: 128 -> 256"
    ):
        train(cfg.replace(**{"model.d_ff": 256}), run_dir, extend=True)  # without: refused before restoring
    assert Checkpoints(run_dir / "checkpoints", cfg.checkpoint).steps() == [10, 20, 30]
    assert not (run_dir / "corrupt_checkpoints").exists()
