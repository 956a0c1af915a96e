"""Executed documentation: docs/USER_GUIDE.md, section by section, as written (tests/doc_support.py
has the budgets). A section that uses what an earlier one made says so in the guide; here it gets
a copy of that section's directory."""

import shutil
from pathlib import Path

import pytest
from doc_commands import (
    Command,
    CommandFailedError,
    markdown_sections,
    prepare_directory,
    run_sequence,
)
from doc_support import GUIDE, GUIDE_BUDGET, POST_TRAINING, fresh, guide_section, link_files

# The user guide, section by section. A section that uses what an earlier one made says so in the
# guide; here it gets a copy of that section's directory.


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory, stdlib_data) -> Path:
    """The guide's Quick start, run as written: later sections read its runs/tiny."""
    directory = fresh(tmp_path_factory.mktemp("quick_start"), stdlib_data)
    ran = run_sequence(guide_section("Quick start"), directory, GUIDE_BUDGET)
    again = [r for r in ran if r.command.text == "lmx train configs/tiny.py"]
    assert again and "already complete at step 6" in again[-1].output, "the guide says nothing is retrained"
    return directory


def after_quick_start(quick_start: Path, tmp_path: Path) -> Path:
    directory = prepare_directory(tmp_path / "reader")
    for name in ("runs", "data"):
        shutil.copytree(quick_start / name, directory / name, copy_function=link_files)
    return directory


SECTIONS_AFTER_QUICK_START = [
    "Config files and overrides",
    "Meshes and sharding rules",
    "wandb",
    "Generating text",
    "Evaluating",
    "Hugging Face",
    "lmx as a library",
    "Accelerators: attention, precision, profiling",
]


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS_AFTER_QUICK_START)
def test_user_guide_section_runs_as_written(section, quick_start, tmp_path):
    run_sequence(guide_section(section), after_quick_start(quick_start, tmp_path), GUIDE_BUDGET)


@pytest.mark.slow
def test_user_guide_scaling_commands_run_as_written(tmp_path):
    run_sequence(guide_section("Scaling studies: sweeps, launchers and fits"), fresh(tmp_path), GUIDE_BUDGET)
    assert (tmp_path / "reader" / "runs" / "sweeps" / "isoflop_tiny" / "sweep.sbatch").is_file()


@pytest.mark.slow
def test_user_guide_many_machines_commands_run_as_written(tmp_path):
    """The SLURM script is written and parses (the local launcher's command is skipped: see
    tests/doc_support.py)."""
    directory = fresh(tmp_path)
    run_sequence(guide_section("Many machines"), directory, GUIDE_BUDGET)
    assert (directory / "runs" / "small-2x8" / "slurm" / "train.sbatch").is_file()


def test_every_guide_command_is_in_a_tested_section():
    tested = {"Quick start", *SECTIONS_AFTER_QUICK_START}
    tested |= {
        POST_TRAINING,  # with the configs' recipes, in tests/test_docs_configs.py
        "Scaling studies: sweeps, launchers and fits",
        "Many machines",
    }
    untested = {name: cmds for name, cmds in markdown_sections(GUIDE).items() if cmds and name not in tested}
    assert not untested, f"sections with commands that no test runs: {list(untested)}"


def test_a_recipe_out_of_order_fails_naming_the_command(tmp_path):
    """The check itself: evaluating a run before training it fails at that line."""
    commands = [Command("lmx eval runs/nothing_here", "GUIDE.md:7"), Command("lmx --help", "GUIDE.md:8")]
    with pytest.raises(CommandFailedError, match=r"GUIDE\.md:7: `lmx eval runs/nothing_here` failed \(exit 2\)"):
        run_sequence(commands, fresh(tmp_path))
