"""What the executed-documentation tests (tests/test_docs_*.py) share: the budgets that say exactly
how a test may change a document's commands and why, fresh directories, and the prepared corpus.

Every command sequence of README.md, docs/USER_GUIDE.md, the shipped configs' docstrings and the
experiments' READMEs runs in those tests, in the order written, in a fresh directory, on tiny
budgets. A recipe that fails, or runs a command before the one that makes its input, fails them.
"""

import shutil
from pathlib import Path

from doc_commands import ROOT, Budget, Command, markdown_sections, prepare_directory

GUIDE = ROOT / "docs" / "USER_GUIDE.md"
POST_TRAINING = "Post-training: SFT, preference optimisation, reward models, RL"


def guide_section(name: str) -> list[Command]:
    sections = markdown_sections(GUIDE)
    assert name in sections, f"docs/USER_GUIDE.md has no section {name!r}; its sections: {list(sections)}"
    return sections[name]


INSTALLED = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/lmx",
    "lmx",
    ".ci/run installs the package before it runs the tests",
)
TINY_TRAINING = "--set train.steps=6 --set eval.final_batches=2"
TRAINING_RUNS = (
    r"^(lmx train configs/(tiny|sft_tiny|dpo_tiny|rm_tiny|grpo_tiny|rlhf_tiny|icl_tiny)\.py"
    r"|python docs/examples/\w+\.py)"
)
# The small config's shapes on 8 virtual devices would compile for a minute; the mesh is the point.
SMALL_SHAPES = (
    "--set model.d_model=64 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=2 "
    "--set model.d_ff=128 --set model.max_seq_len=64 --set data.seq_len=64 --set train.steps=2 "
    "--set eval.final_batches=1"
)
ISOFLOP_TINY_SWEEP = "lmx sweep configs/sweeps/isoflop_tiny.py"
COORD_CHECK_SHAPES = "--widths 64 256 --steps 2 --seeds 1 --set train.batch_size=2 --set data.seq_len=16"

GUIDE_BUDGET = Budget(
    extra=(
        (TRAINING_RUNS, TINY_TRAINING),
        (r"^XLA_FLAGS=\S+ lmx train configs/small\.py", SMALL_SHAPES),
        # 4 widths x 2 parametrizations x 3 seeds at tiny's 32 x 128 tokens: minutes; tests/test_coord_check.py
        # checks the verdicts at 16 seeds.
        (r"^lmx coord-check configs/tiny\.py", COORD_CHECK_SHAPES),
        # The whole validation split (176k tokens) took 9.1 s, 4 batches 3.3 s (2026-12-04); the README's
        # main job evaluates the whole split through the same evaluator (its test checks the count).
        (r"^lmx eval runs/tiny( --text \S+)?$", "--batches 4"),
        # Scoring every item of a held-out file (200-600) took 4-13 s per command; the tests of
        # lmx eval score whole files (tests/test_post_training.py, tests/test_rl.py).
        (r"^lmx eval runs/\w+ --(task|responses|pairs|rollouts) ", "--limit 32"),
    ),
    replace=(
        INSTALLED,
        ("log.wandb.mode=online", "log.wandb.mode=offline", "no network or API key in CI"),
        (
            f"{ISOFLOP_TINY_SWEEP} --dry-run",
            f"{ISOFLOP_TINY_SWEEP} --dry-run --no-measure",
            "timing 8 model shapes took 57 s (2026-12-04); tests/test_sweep.py runs a measuring dry run",
        ),
    ),
    skip=(
        (ISOFLOP_TINY_SWEEP, "16 runs, minutes; tests/test_launch.py runs the local launcher on small sweeps"),
        (
            "lm_eval --model hf --model_args pretrained=exports/tiny-hf,dtype=float32 --tasks lambada_openai "
            "--batch_size 8",
            "lm-evaluation-harness downloads its datasets (no network here); tests/test_hf.py loads the export in "
            "transformers, which is what the harness's hf model does",
        ),
        (
            "vllm serve exports/tiny-hf --dtype float32 --max-model-len 256",
            "vLLM needs a GPU; tests/test_hf.py checks the export's logits and greedy tokens in transformers",
        ),
        (
            "lmx launch local --processes 2 configs/tiny.py --run-dir runs/tiny-2proc",
            "two processes compiling the tiny model: a minute of the suite's two cores; tests/test_multiprocess.py "
            "runs `lmx launch local` with 2 and 4 processes and checks them against one process",
        ),
        (
            "lmx fit runs/sweeps/isoflop_tiny --approach 2 3 power --bootstrap 1000 --budget 1e13 "
            "--json runs/sweeps/isoflop_tiny/fit/fit.json",
            "needs the sweep above; tests/test_fit.py fits sweep directories, and the README and "
            "experiments/isoflop_stdlib fit committed points",
        ),
    ),
)


def fresh(tmp_path: Path, data: Path | None = None) -> Path:
    directory = prepare_directory(tmp_path / "reader")
    if data is not None:
        shutil.copytree(data, directory / "data", copy_function=link_files)
    return directory


def link_files(src: str, dst: str) -> None:
    """Hard links: the shared data's files are never written to, only read (and replaced whole)."""
    Path(dst).hardlink_to(src)


README_BUDGET = Budget(
    replace=(
        INSTALLED,
        (
            "--approach 2 3 --bootstrap 1000 --budget 1e14",
            "--approach 2 3 --bootstrap 100 --budget 1e14",
            "the 1,000 resamples take 25 s; the isoflop study's test runs them and checks their intervals",
        ),
    ),
    # 60 of the main job's 360 steps already learn (about 4.9 nats against the unigram's 5.9);
    # benchmarks/recipes.py runs all 360 and the README's figures come from that run.
    extra=((r"^lmx train configs/tiny\.py$", "--set train.steps=60"),),
    skip=(
        (
            "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest",
            "the command that runs these tests (tests/test_cli.py checks .ci/run runs it)",
        ),
        (
            "lmx sweep experiments/isoflop_stdlib/sweep.py",
            "40 minutes; its measured points are committed and fitted by the next command",
        ),
        (
            "lmx sweep experiments/isoflop_stdlib/sweep.py --dry-run",
            "the same command runs in the test of experiments/isoflop_stdlib/README.md (it times 5 model shapes)",
        ),
    ),
)


# -------------------------------------------------------------------------------------------------
# The shipped configs' docstrings and the experiments' READMEs


# Recipes that start where another one ends say so ("runs/sft_tiny (see that file)"): they run
# after it, in the same directory.
CONFIG_CHAIN = [
    "configs/sft_tiny.py",
    "configs/dpo_tiny.py",
    "configs/rm_tiny.py",
    "configs/grpo_tiny.py",
    "configs/rlhf_tiny.py",
    "configs/icl_tiny.py",
]
GPU_CONFIGS = ("lm_125m", "lm_350m", "lm_1b3")
CONFIG_BUDGET = Budget(
    extra=((TRAINING_RUNS, TINY_TRAINING),),
    replace=(
        (
            "lmx sweep configs/sweeps/lr_ladder.py --dry-run",
            "lmx sweep configs/sweeps/lr_ladder.py --dry-run --no-measure",
            "timing a step of each shape takes half a minute; tests/test_sweep.py runs a measuring dry run",
        ),
    ),
    skip=(
        (
            f"{ISOFLOP_TINY_SWEEP} && lmx fit runs/sweeps/isoflop_tiny --approach 2 3",
            "16 runs, minutes; tests/test_launch.py and tests/test_fit.py run both on small sweeps",
        ),
        ("lmx sweep configs/sweeps/lr_ladder.py", "9 runs of 600 steps; tests/test_launch.py runs the launcher"),
        *(
            (
                f"lmx train configs/gpu/{name}.py --set data.corpus=text:/path/to/corpus/*.txt",
                "needs 8 GPUs and a corpus; its `lmx plan` runs, and benchmarks/accelerator.py --smoke "
                "compiles and runs the GPU configs' step at tiny widths",
            )
            for name in GPU_CONFIGS
        ),
        (f"{ISOFLOP_TINY_SWEEP} --dry-run", "the same command runs in the user guide's scaling section test"),
    ),
)


ISOFLOP = ROOT / "experiments" / "isoflop_stdlib"
ISOFLOP_README = ISOFLOP / "README.md"
ISOFLOP_BUDGET = Budget(
    replace=(
        (
            "lmx sweep experiments/isoflop_stdlib/sweep.py --dry-run",
            "lmx sweep experiments/isoflop_stdlib/sweep.py --dry-run --no-measure",
            "timing a step of each shape takes a minute; tests/test_sweep.py runs a measuring dry run",
        ),
    ),
    skip=(
        ("lmx sweep experiments/isoflop_stdlib/sweep.py", "40 minutes of training; its points are committed"),
        (
            "lmx fit runs/sweeps/isoflop_stdlib --approach 2 3 power --bootstrap 1000 --budget 1e13 "
            "--json experiments/isoflop_stdlib/fit/fit.json --save-points experiments/isoflop_stdlib/points.csv",
            "needs the sweep's runs; the next command fits the points it saved",
        ),
    ),
)


MUP_TRANSFER = ROOT / "experiments" / "mup_transfer"
MUP_TRANSFER_README = MUP_TRANSFER / "README.md"
MUP_TRANSFER_BUDGET = Budget(
    replace=(
        (
            "lmx sweep experiments/mup_transfer/sweep.py --dry-run",
            "lmx sweep experiments/mup_transfer/sweep.py --dry-run --no-measure",
            "timing a step of each shape takes a minute; tests/test_sweep.py runs a measuring dry run",
        ),
    ),
    skip=(
        ("lmx sweep experiments/mup_transfer/sweep.py", "an hour of training; its results are committed"),
        (
            "lmx data prepare experiments/mup_transfer/sweep.py",
            "experiments/isoflop_stdlib's data, which its README's test prepares; the dry run below needs none",
        ),
        (
            "python experiments/mup_transfer/analyse.py runs/sweeps/mup_transfer",
            "needs the sweep's runs; the next command analyses the results it saved",
        ),
    ),
)


ISOFLOP_TUNED = ROOT / "experiments" / "isoflop_tuned"
ISOFLOP_TUNED_README = ISOFLOP_TUNED / "README.md"
ISOFLOP_TUNED_BUDGET = Budget(
    replace=(
        (
            "lmx sweep experiments/isoflop_tuned/sweep.py --dry-run",
            "lmx sweep experiments/isoflop_tuned/sweep.py --dry-run --no-measure",
            "timing a step of each shape takes a minute; tests/test_sweep.py runs a measuring dry run",
        ),
    ),
    skip=(
        ("lmx sweep experiments/isoflop_tuned/tune.py", "20 minutes of training; its results are committed"),
        (
            "python experiments/isoflop_tuned/analyse_tune.py runs/sweeps/isoflop_tune",
            "needs the tuning sweep's runs; the next command analyses the results it saved",
        ),
        (
            "lmx sweep experiments/isoflop_tuned/sweep.py",
            "52 minutes of training (two sweep processes); its results are committed",
        ),
        (
            "python experiments/isoflop_tuned/analyse.py runs/sweeps/isoflop_tuned",
            "needs the sweep's runs; a later command analyses the results it saved",
        ),
        (
            "lmx fit experiments/isoflop_tuned/points.csv --approach 2 3 power --bootstrap 1000 --budget 1e13 "
            "--json experiments/isoflop_tuned/fit/fit.json",
            "writes the committed fit; the last command refits its points without the bootstrap's 30 s",
        ),
    ),
)
