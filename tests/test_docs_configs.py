"""Executed documentation: the commands in the shipped configs' docstrings, in order (the
post-training ones chained as their docstrings point to each other)."""

import pytest
from doc_commands import (
    ROOT,
    docstring_commands,
    run_sequence,
)
from doc_support import CONFIG_BUDGET, CONFIG_CHAIN, fresh


def test_every_config_with_commands_is_run():
    with_commands = {
        str(path.relative_to(ROOT)) for path in (ROOT / "configs").rglob("*.py") if docstring_commands(path)
    }
    assert with_commands == {*CONFIG_CHAIN, "configs/sweeps/isoflop_tiny.py", "configs/sweeps/lr_ladder.py"}


@pytest.mark.slow
def test_post_training_configs_recipes_run_in_order(stdlib_data, tmp_path):
    directory = fresh(tmp_path, stdlib_data)
    commands = [command for path in CONFIG_CHAIN for command in docstring_commands(ROOT / path)]
    run_sequence(commands, directory, CONFIG_BUDGET)
    for run in ("tiny", "sft_tiny", "dpo_tiny", "rm_tiny", "icl_tiny"):
        assert (directory / "runs" / run / "summary.json").is_file(), run


@pytest.mark.slow
def test_sweep_configs_recipes_run_in_order(tmp_path):
    directory = fresh(tmp_path)
    commands = [
        command
        for name in ("isoflop_tiny", "lr_ladder")
        for command in docstring_commands(ROOT / f"configs/sweeps/{name}.py")
    ]
    run_sequence(commands, directory, CONFIG_BUDGET)
