"""Every benchmark in benchmarks/ runs end to end in its smoke mode (tiny shapes, seconds) and writes
the results the full run writes, so a benchmark that breaks fails CI rather than the next person to
measure. The subprocesses inherit conftest's 8 forced host devices (the default mesh takes them all)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

MACHINE = {"cpu", "cores", "jax", "backend", "devices", "device_kind", "host_memory_retained", "processor"}
PROVENANCE = {"date", "commit", "dirty", "machine", "matmul_ceiling_flops_per_s"}

# The top-level keys each benchmark's full run writes (besides "machine"), and for those that
# report several runs, the keys of each run.
KEYS = {
    "accelerator": {"rows_per_device", "bf16_matmul_flops_per_s", "runs", "attention_config", "attention"},
    "attention": {"layers", "batch", "block", "runs", "memory_growth", "tiny_step_s"},
    "bootstrap_fit": {
        "points",
        "resamples",
        "cpu_count",
        "full_fit_s",
        "bootstrap_s_by_workers",
        "failed_resamples",
        "intervals",
        "truth_inside_interval",
        "target_s",
    },
    "data": {
        "vocab_size",
        "prepare_tokens",
        "prepare_s",
        "prepare_tokens_per_s",
        "loader_batch",
        "loader_tokens_per_s",
    },
    "generate": {"config", "prompt_tokens", "cache_length", "runs"},
    "memory_plan": {"config", "tolerance", "runs", "within_tolerance", "max_error"},
    "multiprocess": {"config", "overrides", "runs", "step_slowdown"},
    "preference_step": {"config", "params", "tokens_per_step", "seq_len", "runs"},
    "train_loop": {
        "config",
        "overrides",
        "tokens_per_step",
        "bare_step_s",
        "loop_step_s",
        "bare_tokens_per_s",
        "loop_tokens_per_s",
        "loop_over_bare",
        "save_stall_steps",
        "save_interval_extra_steps",
    },
    "train_step": {"matmul_ceiling_flops_per_s", "matmul_ceiling_before_after", "overrides", "runs"},
    "rl_step": {"prompt_tokens", "runs"},
}
RUN_KEYS = {
    "accelerator": {
        "config",
        "step_s",
        "mfu",
        "first_loss",
        "device_peak_bytes",
        "xla_bytes",
        "planned_bytes",
        "decode_tokens_per_s",
    },
    "attention": {"attention", "length", "temp_bytes", "step_s"},
    "memory_plan": {"config", "mesh", "remat", "estimate_bytes", "measured_bytes", "ratio", "memory_analysis"},
    "generate": {
        "batch",
        "new_tokens",
        "cached_tokens_per_s",
        "recompute_tokens_per_s",
        "recompute_tokens_per_s_by_layers",
        "speedup",
        "compilations",
    },
    "multiprocess": {
        "processes",
        "devices_per_process",
        "compile_s",
        "step_s",
        "tokens_per_s",
        "allreduce_s_by_floats",
    },
    "preference_step": {"compile_s", "step_s", "tokens_per_s", "cost_per_token_vs_pretrain"},
    "rl_step": {
        "generate_s",
        "score_s",
        "prepare_s",
        "update_s",
        "rollout_tokens_per_s",
        "streaming_tokens_per_s",
        "rollout_over_streaming",
    },
    "train_step": {
        "config",
        "params",
        "batch",
        "seq_len",
        "compile_s",
        "step_s",
        "tokens_per_s",
        "model_flops_per_s",
        "matmul_flops_per_s",
        "mfu_vs_matmul",
    },
}


def recorded_results() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((BENCHMARKS / "results").glob("*"))}


def test_every_benchmark_has_a_smoke_test():
    # Not benchmarks: shared code, a trace reader (tests/test_profile.py), and the documented
    # recipes at full budget, whose commands tests/test_docs_*.py run at tiny budgets.
    shared = {"common", "doc_commands", "recipes", "tables", "isoflop_tables", "trace_summary"}
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - shared
    assert scripts == set(KEYS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KEYS))
def test_benchmark_smoke(name, tmp_path):
    before = recorded_results()
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert recorded_results() == before, "a smoke run changed benchmarks/results/"

    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["smoke"] is True
    assert not PROVENANCE - set(results), f"missing: {PROVENANCE - set(results)}"
    assert not MACHINE - set(results["machine"])
    assert results["matmul_ceiling_flops_per_s"] > 0
    assert results["machine"]["devices"] == jax.device_count()  # conftest's 8 devices reached the run
    assert not KEYS[name] - set(results), f"missing: {KEYS[name] - set(results)}"
    if name in RUN_KEYS:
        runs = results["runs"]
        rows = runs.values() if isinstance(runs, dict) else runs
        assert rows
        for row in rows:
            assert not RUN_KEYS[name] - set(row), f"missing in a run: {RUN_KEYS[name] - set(row)}"
    if name == "preference_step":
        assert set(results["runs"]) == {"pretrain", "preference_in_step_reference", "preference_precomputed_reference"}
    if name == "multiprocess":  # the layouts really were 1 x 2 and 2 x 1
        assert [(r["processes"], r["devices_per_process"]) for r in results["runs"].values()] == [(1, 2), (2, 1)]
    if name == "train_step":
        assert [r["config"] for r in results["runs"]] == ["configs/tiny.py", "configs/small.py"]
    if name == "accelerator":  # one step of each implementation from the same state and batch
        losses = [r["first_loss"] for r in results["attention"]]
        assert len(losses) == 3 and max(losses) - min(losses) < 1e-3 * losses[0], losses
    if name == "train_loop":
        # A checkpoint was saved with steps after it: the stall figures are not empty.
        assert results["save_stall_steps"] and results["save_interval_extra_steps"]
        assert any((tmp_path / "data").iterdir()), "the smoke run's tokenizer and tokens belong under --out"
