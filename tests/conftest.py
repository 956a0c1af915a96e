"""Test setup: 8 virtual CPU devices (set before JAX is imported), wandb offline, shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("WANDB_MODE", "offline")
# One XLA compilation cache for the session, inherited by every `lmx` subprocess a test starts: a
# shape compiled once (the tiny model of many runs and relaunches) is loaded, not compiled again.
# It holds compiled programs only, so results are the same with or without it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmx-tests-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
os.environ.setdefault("WANDB_SILENT", "true")

import subprocess
import sys
import sysconfig
from pathlib import Path

import jax
import pytest

# benchmarks/ holds the scripts the docs' figures come from and the runner of the docs' commands
# (doc_commands.py), which tests/test_docs_*.py import.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from lmx.data.corpus import Corpus
from lmx.data.tokenizer import train_tokenizer

assert jax.device_count() == 8, "tests need XLA_FLAGS set before jax is imported"


def tiny_config(**overrides) -> Config:
    """A model small enough to compile in about a second; dotted overrides as in `Config.replace`."""
    cfg = Config(
        model=ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=16),
        data=DataConfig(seq_len=16),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=2),
        train=TrainConfig(batch_size=8, steps=5),
    )
    return cfg.replace(**overrides)


@pytest.fixture(scope="session")
def cpu_devices():
    return jax.devices()


# A real corpus every CPython has: the email package's sources (20 files, ~350 KB).
CORPUS = f"text:{sysconfig.get_paths()['stdlib']}/email/*.py"

LOOP_CONFIG = """
from lmx.config import (CheckpointConfig, Config, DataConfig, EvalConfig, LogConfig, ModelConfig,
                        OptimConfig, TrainConfig)

def get_config():
    return Config(
        name="loop",
        model=ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=64),
        data=DataConfig(seq_len=64, corpus={corpus!r}, dir={data_dir!r}, validation_fraction=0.2),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=5, schedule="constant"),
        train=TrainConfig(steps=30, batch_size=16),
        checkpoint=CheckpointConfig(every_steps=10, max_to_keep=3),
        eval=EvalConfig(final_batches=4),
        log=LogConfig(every_steps=1, progress=False),
    )
"""


@pytest.fixture(scope="session")
def loop_config_file(tmp_path_factory):
    """A config file for small real runs; its data (tokenizer, token files) is prepared once."""
    root = tmp_path_factory.mktemp("loop")
    path = root / "loop.py"
    path.write_text(LOOP_CONFIG.format(corpus=CORPUS, data_dir=str(root / "data")))
    return path


def loop_config(path, **overrides) -> Config:
    return load_config(path, {k: str(v) for k, v in overrides.items()})


@pytest.fixture(scope="session")
def full_run(loop_config_file, tmp_path_factory):
    """An uninterrupted 30-step run on a (2,2,2) mesh: the reference the resume tests compare to,
    and a trained run for the evaluation and generation tests (which must not change it)."""
    from lmx.train.loop import train

    run_dir = tmp_path_factory.mktemp("full")
    cfg = loop_config(loop_config_file, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "eval.every_steps": 10})
    result = train(cfg, run_dir)
    return cfg, run_dir, result


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A real SentencePiece model trained on 2 MB of the standard library."""
    stdlib = Corpus.parse("stdlib")
    path = tmp_path_factory.mktemp("tok") / "sp.model"
    return train_tokenizer((d.text for d in stdlib.documents("train")), path, vocab_size=1024, max_bytes=2_000_000)


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory) -> Path:
    """configs/tiny.py's data (its tokenizer and token files) prepared once and shared by the
    sections that train it; the README's main job prepares its own from nothing."""
    from doc_commands import environment, prepare_directory

    directory = prepare_directory(tmp_path_factory.mktemp("stdlib_data"))
    subprocess.run(
        ["lmx", "data", "prepare", "configs/tiny.py"], cwd=directory, env=environment(), check=True, capture_output=True
    )
    return directory / "data"


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """The generated tasks (lmx.data.synth): 2,000 SFT/preference training and 200 held-out records."""
    from lmx.data.synth import write_synth_tasks

    return write_synth_tasks(tmp_path_factory.mktemp("synth"), train=2000, heldout=200, seed=0)


@pytest.fixture(scope="session")
def sft_run(full_run, synth, tmp_path_factory, cpu_devices):
    """The pretrained run fine-tuned on the generated tasks (2,500 steps, one device): the start of
    the preference and RL tests."""
    from post_support import post_config

    from lmx.train.loop import train

    pretrain_cfg, pretrain_dir, _ = full_run
    run_dir = tmp_path_factory.mktemp("sft")
    cfg = post_config(pretrain_cfg, "sft", pretrain_dir, "sft", synth, steps=2500, lr=3e-3)
    train(cfg, run_dir, devices=cpu_devices[:1])
    return run_dir


# The longest files first (two local full runs, 2026-12-04): xdist hands each worker a whole file at
# a time (--dist loadfile) in this order, so the two workers end close together instead of one
# waiting while the other runs a long file that came last. xdist would otherwise order the files by
# their number of tests, which put test_post_training.py (4 tests, ~290 s) and
# test_preemption.py (3 tests, ~200 s) last: setup.cfg passes --no-loadscope-reorder.
LONGEST_FIRST = [
    "test_rl.py",
    "test_docs_guide.py",
    "test_post_training.py",
    "test_docs_readme.py",
    "test_benchmarks.py",
    "test_docs_configs.py",
    "test_preemption.py",
    "test_multiprocess.py",
    "test_evaluate_sources.py",
    "test_objectives.py",
    "test_attention.py",
    "test_steps.py",
    "test_parametrization.py",
    "test_model.py",
    "test_hf_export.py",
    "test_fit.py",
    "test_launch.py",
    "test_loop.py",
    "test_generate.py",
    "test_coord_check.py",
    "test_rollout.py",
    "test_hf_import.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
