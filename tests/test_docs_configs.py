"""Executed documentation: the commands in the shipped configs' docstrings, in order (the
post-training ones chained as their docstrings point to each other)."""

import pytest
from doc_commands import (
    ROOT,
    Command,
    docstring_commands,
    run_sequence,
)
from doc_support import (
    CONFIG_BUDGET,
    CONFIG_CHAIN,
    GPU_CONFIGS,
    GUIDE_BUDGET,
    POST_TRAINING,
    fresh,
    guide_section,
)

from lmx.config import load_config
from lmx.model.flops import param_counts


def test_every_config_with_commands_is_run():
    with_commands = {
        str(path.relative_to(ROOT)) for path in (ROOT / "configs").rglob("*.py") if docstring_commands(path)
    }
    gpu = {f"configs/gpu/{name}.py" for name in GPU_CONFIGS}
    assert with_commands == {*CONFIG_CHAIN, *gpu, "configs/sweeps/isoflop_tiny.py", "configs/sweeps/lr_ladder.py"}


def split_chain(guide: list[Command], chain: list[Command]) -> list[Command]:
    """What the configs' chained recipe adds to the guide's: the guide's commands must appear in it
    in the guide's order, and the others be either repeats of an earlier command of the chain (a
    finished run says so; generated data is written again alike) or come after the last shared one.
    Returns those that come after (the in-context-learning recipe)."""
    guide_texts = [c.text for c in guide]
    seen: set[str] = set()
    position, added = -1, []
    for command in chain:
        if command.text in seen:
            continue  # a repeat: the run or the files already exist
        seen.add(command.text)
        if command.text in guide_texts:
            assert not added, f"{command.where}: a guide command after config-only ones ({added[0].where})"
            index = guide_texts.index(command.text)
            assert index > position, f"{command.where}: `{command.text}` comes earlier in the guide"
            position = index
        else:
            added.append(command)
    return added


@pytest.mark.slow
def test_post_training_recipes_of_the_guide_and_the_configs_run_in_order(stdlib_data, tmp_path):
    """One fresh directory (nothing but the prepared corpus) runs the guide's post-training recipe in
    order. The configs' docstrings chain the same commands plus repeats and the in-context-learning
    recipe (checked by `split_chain`), which is word for word the one the guide's Evaluating section
    gives and tests/test_docs_guide.py runs; so the configs' recipe runs too, without training
    anything twice."""
    guide = guide_section(POST_TRAINING)
    chain = [command for path in CONFIG_CHAIN for command in docstring_commands(ROOT / path)]
    added = split_chain(guide, chain)
    assert [c.text.split()[:3] for c in added] == [
        ["lmx", "data", "icl-task"],
        ["lmx", "train", "configs/icl_tiny.py"],
        ["lmx", "eval", "runs/icl_tiny"],
    ]
    # The in-context-learning recipe is the guide's own, which its Evaluating test runs as written.
    evaluating, icl = [c.text for c in guide_section("Evaluating")], [c.text for c in added]
    assert any(evaluating[i : i + len(icl)] == icl for i in range(len(evaluating))), icl
    directory = fresh(tmp_path, stdlib_data)
    run_sequence(guide, directory, GUIDE_BUDGET)
    for run in ("tiny", "sft_tiny", "dpo_tiny", "rm_tiny", "grpo_tiny", "rlhf_tiny"):
        assert (directory / "runs" / run / "summary.json").is_file(), run


def test_the_chain_check_refuses_a_config_order_the_guide_does_not_have():
    """The check itself: a command the guide gives earlier, or a shared command after a config-only
    one, fails naming where the docstring gives it."""
    guide = [Command("lmx a", "G:1"), Command("lmx b", "G:2")]
    with pytest.raises(AssertionError, match="C:2: `lmx a` comes earlier in the guide"):
        split_chain(guide, [Command("lmx b", "C:1"), Command("lmx a", "C:2")])
    with pytest.raises(AssertionError, match="C:3: a guide command after config-only ones"):
        split_chain(guide, [Command("lmx a", "C:1"), Command("lmx x", "C:2"), Command("lmx b", "C:3")])
    assert split_chain(guide, [Command("lmx a", "C:1"), Command("lmx a", "C:2"), Command("lmx b", "C:3")]) == []


@pytest.mark.slow
def test_sweep_configs_recipes_run_in_order(stdlib_data, tmp_path):
    directory = fresh(tmp_path, stdlib_data)  # the sweeps' data is configs/tiny.py's
    commands = [
        command
        for name in ("isoflop_tiny", "lr_ladder")
        for command in docstring_commands(ROOT / f"configs/sweeps/{name}.py")
    ]
    run_sequence(commands, directory, CONFIG_BUDGET)


def test_gpu_configs_plan_what_their_docstrings_say(tmp_path):
    """Each GPU config's `lmx plan` runs (its training needs 8 GPUs), and the memory and step time
    its docstring gives are that plan's; the name's size is the model's."""
    import re

    for name, size in zip(GPU_CONFIGS, (125e6, 350e6, 1.3e9), strict=True):
        path = ROOT / f"configs/gpu/{name}.py"
        ran = run_sequence(docstring_commands(path), fresh(tmp_path / name), CONFIG_BUDGET)
        (plan,) = [r.output for r in ran if r.run and r.run.startswith("lmx plan")]
        total = re.search(r"total per device\s+(\S+ \S+)", plan)[1]
        step = re.search(r"MFU of .* per device: (\S+ \S+); the run's [\d,]+ steps: (.*)", plan)
        doc = " ".join(path.read_text().split())  # the docstring's lines joined
        assert f"GPU): {total} per device, {step[1]} per step, {step[2]} for the run." in doc, (name, plan)
        assert "fits" in plan and "does not fit" not in plan
        assert 0.85 < param_counts(load_config(path).model).total / size < 1.15, name
