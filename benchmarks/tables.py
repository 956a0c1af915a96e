"""Renders the figures the docs publish from the results files that measured them.

Every generated part of a Markdown file sits between `<!-- tables.py: NAME -->` and
`<!-- /tables.py -->`; NAME picks a renderer below, which reads a results file (benchmarks/results/,
experiments/*/) and writes the table or list, then a line saying when, on which commit and machine
it was measured, and the matmul ceiling measured beside it (compare yours:
`python -c "from lmx.parallel.hardware import time_matmul_flops as t; print(t() / 1e9)"`).

    .venv/bin/python benchmarks/tables.py           # rewrites the generated parts in place
    .venv/bin/python benchmarks/tables.py --check   # exit 1, naming them, when any is stale

tests/test_docs_readme.py runs `--check`, so a results file and the text it feeds cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import isoflop_tables

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "docs" / "USER_GUIDE.md",
    ROOT / "BENCHMARKS.md",
    isoflop_tables.STDLIB / "README.md",
    isoflop_tables.TUNED / "README.md",
]
BLOCK = re.compile(r"(<!-- tables\.py: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /tables\.py -->)", re.S)


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def recipe_provenance(results: dict[str, Any], recipe: str) -> str:
    """The provenance line of one recipe of recipes.json: its own when it was measured again alone
    (`benchmarks/recipes.py --only`), else the file's."""
    own = results.get("recipe_provenance", {}).get(recipe, {})
    return provenance({**results, **own}, "benchmarks/results/recipes.json")


def provenance(results: dict[str, Any], source: str, recorded: str = "") -> str:
    """The line under every generated table: when, on what, against which ceiling. `recorded`: the
    date the docs gave for a results file written before results carried their provenance."""
    if "date" not in results:
        when = f" on {recorded}" if recorded else ""
        return (
            f"_From `{source}`, recorded{when} on this project's 2-core machine, before results files carried "
            "their commit, machine and matmul ceiling; run the script again to measure with them._\n"
        )
    m = results["machine"]
    dirty = " with uncommitted changes" if results.get("dirty") else ""
    ceiling = results["matmul_ceiling_flops_per_s"] / 1e9
    return (
        f"_Measured {results['date']} on commit `{results['commit']}`{dirty}: {m['cpu']}, {m['cores']} cores, "
        f"jax {m['jax']} ({m['backend']}, {m['devices']} device{'s' if m['devices'] > 1 else ''}); "
        f"float32 matmul ceiling {ceiling:.0f} GFLOP/s. Source: `{source}`._\n"
    )


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# -------------------------------------------------------------------------------------------------
# The documented recipes (benchmarks/recipes.py)


def recipe_command_seconds(results: dict[str, Any], recipe: str, startswith: str) -> float:
    return next(c["seconds"] for c in results["commands"][recipe] if c["command"].startswith(startswith))


def main_job() -> str:
    r = load("recipes")
    s = r["runs"]["tiny"]["summary"]
    final = s["final_eval"]
    wall = recipe_command_seconds(r, "main_job", "python3 -m venv")
    return (
        f"- `lmx train configs/tiny.py` took {wall:.0f} s end to end: tokenizer, tokenizing 31 MB, compilation, "
        f"{s['steps']} steps of {s['tokens'] // s['steps']:,} tokens ({s['train_time_s']:.0f} s of training), "
        "the periodic evaluations and the final one.\n"
        f"- The final validation loss was {final['eval/loss']:.4f} nats per token, against "
        f"{s['unigram_loss']:.3f} for a unigram model of the corpus.\n"
        f"- That is **{final['eval/bits_per_byte']:.4f} bits per byte** over the whole held-out split "
        f"({final['eval/bytes']:,} bytes).\n\n" + recipe_provenance(r, "main_job")
    )


def _evaluation(run: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(v for k, v in run["evaluations"].items() if k.startswith(prefix))


def _tasks(per_task: dict[str, Any], key: str | None = None) -> str:
    return ", ".join(f"{t} {(v[key] if key else v):.3f}" for t, v in per_task.items())


def post_training() -> str:
    r = load("recipes")
    runs = r["runs"]
    rows = []
    sft = _evaluation(runs["sft_tiny"], "eval-responses-")
    rows.append(
        [
            "`sft_tiny`",
            f"{runs['sft_tiny']['summary']['steps']:,}",
            seconds(runs["sft_tiny"]["summary"]["train_time_s"]),
            f"greedy exact match {sft['accuracy']:.3f} ({_tasks(sft['per_task'])}; {sft['items']} prompts)",
        ]
    )
    dpo_pairs = _evaluation(runs["dpo_tiny"], "eval-pairs-")
    dpo_answers = _evaluation(runs["dpo_tiny"], "eval-responses-")
    rows.append(
        [
            "`dpo_tiny`",
            f"{runs['dpo_tiny']['summary']['steps']:,}",
            seconds(runs["dpo_tiny"]["summary"]["train_time_s"]),
            f"reward accuracy {dpo_pairs['reward_accuracy']:.3f} ({_tasks(dpo_pairs['per_task'], 'reward_accuracy')}; "
            f"{dpo_pairs['pairs']} pairs), margin {dpo_pairs['margin']:.2f}; greedy exact match "
            f"{dpo_answers['accuracy']:.3f} ({_tasks(dpo_answers['per_task'])})",
        ]
    )
    rm = _evaluation(runs["rm_tiny"], "eval-pairs-")
    rows.append(
        [
            "`rm_tiny`",
            f"{runs['rm_tiny']['summary']['steps']:,}",
            seconds(runs["rm_tiny"]["summary"]["train_time_s"]),
            f"pairwise accuracy **{rm['accuracy']:.3f}** ({_tasks(rm['per_task'], 'accuracy')}; {rm['pairs']} pairs)",
        ]
    )
    gaps = [row for row in runs["dpo_tiny"]["eval_rows"] if "eval/chosen_logp_gap" in row]
    first, last = gaps[0], gaps[-1]
    return (
        table(["run", "steps", "training time", "held-out result"], rows)
        + f"\nDPO's held-out margin was {first['eval/margin']:.2f} at step {first['step']} and "
        f"{last['eval/margin']:.2f} at step {last['step']}; the policy's log-probability of the chosen "
        f"answers moved {last['eval/chosen_logp_gap']:+.2f} nats per response from the reference's, of the "
        f"rejected ones {last['eval/rejected_logp_gap']:+.2f}.\n\n" + recipe_provenance(r, "post_training")
    )


def recall() -> str:
    r = load("recipes")
    rows = _evaluation(r["runs"]["icl_tiny"], "eval-task-")  # a list: one row per shot count
    cells = [[row["shots"], f"{row['accuracy']:.3f}", row["items"]] for row in rows]
    return table(["shots", "accuracy (summed log-prob)", "items"], cells) + "\n" + recipe_provenance(r, "recall")


# -------------------------------------------------------------------------------------------------
# Benchmarks


def decode() -> str:
    r = load("generate")
    rows = []
    for run in r["runs"]:
        by = run["recompute_tokens_per_s_by_layers"]
        best = max(by, key=by.get)
        scanned = f"**{by['scanned']:.1f}**" if best == "scanned" else f"{by['scanned']:.1f}"
        unrolled = f"**{by['unrolled']:.1f}**" if best == "unrolled" else f"{by['unrolled']:.1f}"
        c = run["compilations"]
        rows.append(
            [
                run["batch"],
                f"{run['cached_tokens_per_s']:.1f}",
                f"{scanned} / {unrolled}",
                f"**{run['speedup']:.1f}x**",
                f"prefill {c['prefill']}, step {c['step']}",
            ]
        )
    header = ["batch", "cached tokens/s", "recompute tokens/s (scanned / unrolled)", "speedup", "compilations"]
    return table(header, rows) + "\n" + provenance(r, "benchmarks/results/generate.json")


def train_step() -> str:
    r = load("train_step")
    rows = [
        [
            Path(run["config"]).stem,
            f"{run['params'] / 1e6:.1f}M",
            f"{run['batch']} x {run['seq_len']}",
            f"{run['step_s']:.3f} s",
            f"{run['tokens_per_s']:,.0f}",
            f"{run['compile_s']:.1f} s",
            f"{run['model_flops_per_s'] / 1e9:.1f}",
            f"{run['mfu_vs_matmul']:.2f}",
        ]
        for run in r["runs"]
    ]
    header = ["config", "params", "batch x seq", "step", "tokens/s", "compile", "model GFLOP/s", "/ ceiling"]
    before, after = (x / 1e9 for x in r["matmul_ceiling_before_after"])
    return (
        table(header, rows)
        + f"\nCeiling in that run: {before:.1f} GFLOP/s before the configs and {after:.1f} after; the ratio divides "
        "by the higher.\n\n" + provenance(r, "benchmarks/results/train_step.json", "2026-12-01")
    )


def data() -> str:
    r = load("data")
    b, s = r["loader_batch"]
    rows = [
        [
            f"`prepare` on the stdlib corpus (BPE vocab {r['vocab_size']}, {r['prepare_tokens'] / 1e6:.2f}M tokens)",
            f"{r['prepare_s']:.2f} s = {r['prepare_tokens_per_s'] / 1e6:.2f}M tokens/s",
        ],
        [
            f"pretraining loader, batch {b} x {s}, document packing",
            f"{r['loader_tokens_per_s'] / 1e6:.2f}M tokens/s",
        ],
    ]
    return table(["what", "figure"], rows) + "\n" + provenance(r, "benchmarks/results/data.json")


def train_loop() -> str:
    r = load("train_loop")
    bare, loop = r["tokens_per_step"] / r["bare_tokens_per_s"], r["tokens_per_step"] / r["loop_tokens_per_s"]
    rows = [
        ["bare compiled step", f"{bare:.3f} s", f"{r['bare_tokens_per_s']:,.0f}"],
        ["full loop", f"{loop:.3f} s", f"{r['loop_tokens_per_s']:,.0f}"],
        ["**loop / bare**", "", f"**{r['loop_over_bare']:.3f}** (target >= 0.95)"],
    ]
    return (
        table(["", "step (median)", "tokens/s"], rows)
        + "\n"
        + provenance(r, "benchmarks/results/train_loop.json", "2026-12-01")
    )


def multiprocess() -> str:
    r = load("multiprocess")
    runs = r["runs"]
    sizes = sorted({int(k) for run in runs.values() for k in run["allreduce_s_by_floats"]})
    rows = [
        [
            name,
            f"{run['step_s'] * 1e3:.0f} ms",
            f"{run['tokens_per_s']:,.0f}",
            *(f"{run['allreduce_s_by_floats'][str(n)] * 1e3:.2f} ms" for n in sizes),
        ]
        for name, run in runs.items()
    ]
    header = ["layout", "step (median)", "tokens/s", *(f"all-reduce {n:,} floats" for n in sizes)]
    return (
        table(header, rows)
        + f"\nTwo processes take {r['step_slowdown']:.2f}x the time of one. Config `{r['config']}`, data axis 2. "
        + provenance(r, "benchmarks/results/multiprocess.json")
    )


def preference_step() -> str:
    r = load("preference_step")
    names = {
        "pretrain": ("pretraining", ""),
        "preference_in_step_reference": ("preference, reference in the step", "<= 1.6x"),
        "preference_precomputed_reference": ("preference, precomputed reference", "<= 1.1x"),
    }
    rows = [
        [label, f"{run['step_s']:.3f} s", f"{run['tokens_per_s']:,.0f}", f"{run['cost_per_token_vs_pretrain']:.2f}x", t]
        for key, (label, t) in names.items()
        for run in [r["runs"][key]]
    ]
    header = ["step", "step time", "tokens/s", "cost per token vs pretraining", "target"]
    return table(header, rows) + "\n" + provenance(r, "benchmarks/results/preference_step.json", "2026-11-25")


def rl_step() -> str:
    r = load("rl_step")
    rows = [
        [
            run["config"],
            run["batch"],
            f"{run['generate_s']:.3f} s",
            f"{run['score_s'] * 1e3:.1f} ms",
            f"{run['prepare_s']:.3f} s",
            f"{run['update_s']:.3f} s",
            f"{run['rollout_tokens_per_s']:,.0f}",
            f"{run['streaming_tokens_per_s']:,.0f}",
            f"{run['rollout_over_streaming']:.2f}x",
        ]
        for run in r["runs"]
    ]
    header = [
        "config", "completions", "generate", "score", "old + reference log-probs", "update",
        "rollout tokens/s", "streaming tokens/s", "rollout / streaming (target >= 0.8)",
    ]  # fmt: skip
    return table(header, rows) + "\n" + provenance(r, "benchmarks/results/rl_step.json")


def attention() -> str:
    r = load("attention")
    lengths = sorted({run["length"] for run in r["runs"]})
    names = list(r["memory_growth"])
    by = {(run["attention"], run["length"]): run for run in r["runs"]}
    rows = [
        [name]
        + [f"{by[name, n]['temp_bytes'] / 2**20:,.1f} MiB" for n in lengths]
        + [f"{r['memory_growth'][name]:.1f}x"]
        + [f"{by[name, n]['step_s'] * 1e3:,.0f} ms" for n in lengths]
        for name in names
    ]
    header = (
        ["attention"]
        + [f"temporaries, L={n:,}" for n in lengths]
        + [f"L={lengths[-1]:,} / L={lengths[0]:,}"]
        + [f"step, L={n:,}" for n in lengths]
    )
    tiny = ", ".join(f"{name} {s * 1e3:,.0f} ms" for name, s in r["tiny_step_s"].items())
    note = f"configs/tiny.py's own step (4 layers, 32 x 128 tokens): {tiny}.\n"
    return table(header, rows) + "\n" + note + provenance(r, "benchmarks/results/attention.json")


def memory_plan() -> str:
    r = load("memory_plan")
    rows = [
        [
            run["config"],
            "(" + ", ".join(str(s) for s in run["mesh"]) + ")",
            run["remat"],
            f"{run['estimate_bytes'] / 2**20:,.1f} MiB",
            f"{run['measured_bytes'] / 2**20:,.1f} MiB",
            f"{run['ratio']:.2f}",
        ]
        for run in r["runs"]
    ]
    header = ["config", "mesh (data, fsdp, tensor)", "remat", "estimate (lmx plan)", "memory_analysis", "ratio"]
    within = f"{r['within_tolerance']} of {len(r['runs'])} within {r['tolerance']:.0%}"
    note = f"{within}; largest error {r['max_error']:.1%}.\n"
    return table(header, rows) + "\n" + note + provenance(r, "benchmarks/results/memory_plan.json")


def bootstrap_fit() -> str:
    r = load("bootstrap_fit")
    by = r["bootstrap_s_by_workers"]
    rows = [["full fit (grid of 4,500 evaluated at once, L-BFGS-B from the best 64)", f"{r['full_fit_s']:.2f} s", ""]]
    for workers, s in sorted(by.items(), key=lambda kv: -int(kv[0])):
        what = f"{r['resamples']:,} resamples, {workers} " + ("worker processes" if int(workers) > 1 else "process")
        rows.append([what, f"{s:.1f} s", f"< {r['target_s']} s" if int(workers) > 1 else ""])
    return (
        table(["what", "time", "target"], rows)
        + "\n"
        + provenance(r, "benchmarks/results/bootstrap_fit.json", "2026-11-25")
    )


# -------------------------------------------------------------------------------------------------
def isoflop_runs(study: Path, header_rows: isoflop_tables.Table) -> str:
    recorded = json.loads((study / "provenance.json").read_text())
    return table(*header_rows) + "\n" + provenance(recorded, str((study / "points.csv").relative_to(ROOT)))


def isoflop_exponents(study: Path) -> str:
    header, rows, law = isoflop_tables.exponents(study)
    return table(header, rows) + "\n" + law


RENDERERS: dict[str, Callable[[], str]] = {
    "main-job": main_job,
    "post-training": post_training,
    "recall": recall,
    "decode": decode,
    "train-step": train_step,
    "data": data,
    "train-loop": train_loop,
    "preference-step": preference_step,
    "rl-step": rl_step,
    "attention": attention,
    "memory-plan": memory_plan,
    "multiprocess": multiprocess,
    "bootstrap-fit": bootstrap_fit,
    "isoflop-runs": lambda: isoflop_runs(isoflop_tables.STDLIB, isoflop_tables.stdlib_runs()),
    "isoflop-minima": lambda: table(*isoflop_tables.minima(isoflop_tables.STDLIB)),
    "isoflop-exponents": lambda: isoflop_exponents(isoflop_tables.STDLIB),
    "isoflop-tuned-runs": lambda: isoflop_runs(isoflop_tables.TUNED, isoflop_tables.tuned_runs()),
    "isoflop-tuned-minima": lambda: table(*isoflop_tables.minima(isoflop_tables.TUNED)),
    "isoflop-tuned-exponents": lambda: isoflop_exponents(isoflop_tables.TUNED),
    "isoflop-comparison": lambda: table(*isoflop_tables.comparison()),
}


def render(text: str, where: str) -> str:
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise SystemExit(f"{where}: no renderer {name!r} (known: {', '.join(RENDERERS)})")
        return match[1] + RENDERERS[name]() + match[4]

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 naming stale documents")
    args = parser.parse_args()
    stale = []
    for path in DOCUMENTS:
        text = path.read_text()
        new = render(text, str(path.relative_to(ROOT)))
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale generated tables in {', '.join(stale)}: run python benchmarks/tables.py", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "generated tables are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
