"""The documented recipes at their full budgets, timed: README.md's main job, then
docs/USER_GUIDE.md's post-training recipe and its in-context recall task, run in order in one fresh
directory exactly as written. Writes benchmarks/results/recipes.json: each command's wall time,
each run's summary and every evaluation it wrote, with the date, commit, machine and matmul
ceiling. `benchmarks/tables.py` renders the docs' tables from it.

About 15 minutes on 2 CPU cores. tests/test_docs_*.py runs the same commands on tiny budgets.

    .venv/bin/python benchmarks/recipes.py [--dir DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, provenance, write_results
from doc_commands import ROOT, Budget, markdown_commands, markdown_sections, prepare_directory, run_sequence

GUIDE = ROOT / "docs" / "USER_GUIDE.md"
POST_TRAINING = "Post-training: SFT, preference optimisation, reward models, RL"
RECALL = "lmx data icl-task data/icl"  # the first command of the guide's recall-task recipe
PAYLOAD_KEYS = ("commands", "wall_s", "runs", "recipe_provenance")
INSTALLED = ("python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/lmx", "lmx", "installed")


def recipes() -> dict[str, list]:
    main_job = markdown_commands(ROOT / "README.md")[:1]
    evaluating = markdown_sections(GUIDE)["Evaluating"]
    start = next(
        i for i, c in enumerate(evaluating) if c.text == RECALL and i > 0 and "icl_tiny" in evaluating[i + 1].text
    )
    return {
        "main_job": main_job,
        "post_training": markdown_sections(GUIDE)[POST_TRAINING],
        "recall": evaluating[start:],
    }


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_results(run_dir: Path) -> dict:
    """A run's summary, every evaluation file it holds, and its evaluation rows over training."""
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    evaluations = {p.name: read_json(p) for p in sorted(run_dir.glob("eval-*.json"))}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    eval_rows = [r for r in rows if any(k.startswith("eval/") for k in r)]
    return {"summary": summary, "evaluations": evaluations, "eval_rows": eval_rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="where to run (default: a new temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for recipes.json")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(recipes()),
        help="run only these recipes (in a new directory) and replace their entries in an existing "
        "recipes.json, e.g. to measure again one that shared the machine; their provenance (date, commit, "
        "machine) is recorded beside the file's, which stays the other recipes'",
    )
    args = parser.parse_args()
    directory = prepare_directory(args.dir or Path(tempfile.mkdtemp(prefix="lmx-recipes-")))
    print(f"running the documented recipes in {directory}", flush=True)
    commands, wall = {}, {}
    for name, sequence in recipes().items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        ran = run_sequence(sequence, directory, Budget(replace=(INSTALLED,)), timeout=3600)
        wall[name] = time.perf_counter() - start
        commands[name] = [{"where": r.command.where, "command": r.command.text, "seconds": r.seconds} for r in ran]
        for r in ran:
            print(f"{r.seconds:7.1f} s  {r.command.where}  {r.command.text}", flush=True)
    runs = {p.name: run_results(p) for p in sorted((directory / "runs").iterdir()) if (p / "metrics.jsonl").is_file()}
    payload = {"commands": commands, "wall_s": wall, "runs": runs}
    if args.only:
        previous = json.loads((args.out / "recipes.json").read_text())
        measured = dict.fromkeys(args.only, provenance())  # one measurement for the recipes run together
        payload = {
            **{key: value for key, value in previous.items() if key not in PAYLOAD_KEYS},
            "recipe_provenance": {**previous.get("recipe_provenance", {}), **measured},
            "commands": {**previous["commands"], **commands},
            "wall_s": {**previous["wall_s"], **wall},
            "runs": {**previous["runs"], **runs},
        }
        path = args.out / "recipes.json"
        path.write_text(json.dumps(payload, indent=2) + "\n")
    else:
        path = write_results("recipes", payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
