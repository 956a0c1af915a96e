"""The generated post-training data: checkable answers, wrong rejected answers, disjoint splits."""

import json

import pytest

from lmx.data.synth import prompts_in, synth_examples, write_synth_tasks
from lmx.errors import DataError


def solve(prompt: str) -> str:
    task, *args = prompt.split()
    xs = [int(a) for a in args]
    answer = {"copy": xs, "reverse": xs[::-1], "sort": sorted(xs), "add": [sum(xs)]}[task]
    return " ".join(str(x) for x in answer)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_are_correct_deterministic_and_disjoint(tmp_path):
    paths = write_synth_tasks(tmp_path / "a", train=400, heldout=40, seed=3)
    again = write_synth_tasks(tmp_path / "b", train=400, heldout=40, seed=3)
    for name, path in paths.items():
        assert path.read_text() == again[name].read_text(), name
    sft_train, sft_held = read(paths["sft_train"]), read(paths["sft_heldout"])
    pref_train, pref_held = read(paths["preference_train"]), read(paths["preference_heldout"])
    assert (len(sft_train), len(sft_held), len(pref_train), len(pref_held)) == (400, 40, 400, 40)
    for r in sft_train + sft_held:
        assert r["response"] == solve(r["prompt"])
    for r in pref_train + pref_held:
        assert r["chosen"] == solve(r["prompt"]) and r["rejected"] != r["chosen"]
        assert len(r["rejected"].split()) == len(r["chosen"].split()) or r["task"] == "add"
    held = {r["prompt"] for r in sft_held + pref_held}
    assert not held & {r["prompt"] for r in sft_train + pref_train}
    assert {r["task"] for r in sft_train} == {"copy", "reverse", "sort", "add"}


def test_excluded_prompts_appear_in_no_file(tmp_path):
    first = write_synth_tasks(tmp_path / "a", train=300, heldout=30, tasks=["copy"], seed=0)
    used = prompts_in([str(first["sft_train"]), str(first["sft_heldout"])])
    second = write_synth_tasks(tmp_path / "b", train=300, heldout=30, tasks=["copy"], seed=1, exclude=used)
    for path in second.values():
        assert not used & {r["prompt"] for r in read(path)}, path.name
    # Without the exclusion the same draw repeats some of them: the check above can fail.
    third = write_synth_tasks(tmp_path / "c", train=300, heldout=30, tasks=["copy"], seed=1)
    assert any(used & {r["prompt"] for r in read(path)} for path in third.values())


def test_bad_requests_are_refused():
    with pytest.raises(DataError, match="unknown synthetic task"):
        synth_examples(["divide"], 10, 0)
    with pytest.raises(DataError, match="cannot draw"):
        synth_examples(["add"], 10_001, 0)  # only 100 x 100 distinct prompts


def test_the_cli_writes_the_files_and_refuses_two_eval_sources(tmp_path, capsys):
    from lmx.cli import main

    assert main(["data", "synth-tasks", str(tmp_path), "--train", "40", "--heldout", "4", "--tasks", "copy"]) == 0
    assert len(read(tmp_path / "sft_train.jsonl")) == 40
    assert {r["task"] for r in read(tmp_path / "preference_heldout.jsonl")} == {"copy"}
    used = {r["prompt"] for r in read(tmp_path / "sft_train.jsonl")}
    args = ["--train", "40", "--heldout", "4", "--tasks", "copy", "--exclude", str(tmp_path / "sft_*.jsonl")]
    assert main(["data", "synth-tasks", str(tmp_path / "more"), *args]) == 0
    assert not used & {r["prompt"] for r in read(tmp_path / "more" / "sft_train.jsonl")}
    assert main(["eval", str(tmp_path), "--pairs", "a.jsonl", "--responses", "b.jsonl"]) == 2
    assert "at most one of" in capsys.readouterr().err
