"""The `lmx` command. It parses arguments and calls library functions; errors meant for the user
(ConfigError, DataError, CheckpointError) print one line and exit 2, without a traceback."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from lmx.errors import LmxError


def _cmd_smoke(args: argparse.Namespace) -> int:
    """A short training run on random tokens: checks that a config builds, shards and steps."""
    import jax
    import numpy as np

    from lmx.config import load_config
    from lmx.scaling.flops import param_counts
    from lmx.train.setup import setup_training, synthetic_batch

    cfg = load_config(args.config, args.set)
    setup = setup_training(cfg)
    step = setup.make_step()
    counts = param_counts(cfg.model)
    print(f"{cfg.name}: {counts.total:,} parameters on mesh {dict(setup.mesh.shape)} ({jax.device_count()} devices)")
    batch = synthetic_batch(
        np.random.default_rng(cfg.train.seed), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size
    )
    state = setup.state
    for i in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        loss = float(metrics["loss"])
        tokens_per_s = cfg.train.batch_size * cfg.data.seq_len / (time.perf_counter() - start)
        note = " (includes compilation)" if i == 0 else ""
        print(f"step {i + 1}: loss {loss:.4f}, {tokens_per_s:,.0f} tokens/s{note}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.train.loop import train

    cfg = load_config(args.config, args.set)
    run_dir = args.run_dir or f"runs/{cfg.name}"
    result = train(cfg, run_dir)
    if result.status == "preempted":
        print(f"stopped at step {result.step}; resume with the same command")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.task, args.responses, args.pairs, args.text, args.tokens)) > 1:
        from lmx.errors import DataError

        raise DataError("give at most one of --task, --responses, --pairs, --text and --tokens")
    if args.task:
        return _eval_task(args)
    if args.responses:
        return _eval_responses(args)
    if args.pairs:
        return _eval_pairs(args)
    import json
    from pathlib import Path

    from lmx.evaluate import evaluate_run

    step, result = evaluate_run(args.run_dir, args.split, args.batches, args.step, args.text, args.tokens)
    source = args.text or args.tokens or args.split
    print(
        f"{args.run_dir} step {step}, {source}: loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, "
        f"{result.bits_per_byte:.4f} bits/byte ({result.tokens:,} tokens, {result.bytes:,} bytes)"
    )
    if args.text or args.tokens:
        out = Path(args.run_dir) / f"eval-{_slug(str(source))}-step{step}.json"
    else:
        out = Path(args.run_dir) / f"eval-{args.split}-step{step}.json"
    out.write_text(json.dumps({"step": step, "source": str(source), **result.to_dict()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _slug(text: str) -> str:
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9]+", "_", text.rsplit("/", 1)[-1]).strip("_")[:40]
    return f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _eval_task(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.evaluate import eval_batch_size
    from lmx.fewshot import ChoiceScorer, evaluate_choices, read_choice_items
    from lmx.runs import load_run

    items = read_choice_items(args.task)
    run = load_run(args.run_dir, args.step)
    tokenizer, cfg, mesh = run.require_tokenizer(), run.cfg, run.setup.mesh
    scorer = ChoiceScorer(
        run.setup.model, run.params, mesh, cfg.mesh.rules, eval_batch_size(cfg, mesh), cfg.data.seq_len
    )
    rows = []
    for shots in args.shots:
        result = evaluate_choices(scorer, tokenizer, items, shots, args.seed, args.separator)
        print(
            f"{args.task} {shots}-shot: accuracy {result.accuracy:.3f} (per token {result.accuracy_per_token:.3f}, "
            f"per byte {result.accuracy_per_byte:.3f}) over {result.items} items"
        )
        rows.append({"step": run.step, "task": str(args.task), **result.to_dict()})
    out = Path(args.run_dir) / f"eval-task-{_slug(str(args.task))}-step{run.step}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_responses(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.chat_eval import exact_match_run

    step, result = exact_match_run(args.run_dir, args.responses, args.step, args.batch_size, args.max_new_tokens)
    tasks = ", ".join(f"{task} {acc:.3f}" for task, acc in result.per_task.items())
    print(
        f"{args.responses}: greedy exact match {result.accuracy:.3f} over {result.items} prompts"
        + (f" ({tasks})" if tasks else "")
    )
    out = Path(args.run_dir) / f"eval-responses-{_slug(args.responses)}-step{step}.json"
    out.write_text(json.dumps({"step": step, "file": args.responses, **result.to_dict()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_pairs(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.chat_eval import evaluate_pairs_run
    from lmx.runs import read_run_config
    from lmx.train.tasks import describe_objective_metrics

    step, metrics = evaluate_pairs_run(args.run_dir, args.pairs, args.step)
    print(f"{args.pairs}: {describe_objective_metrics(read_run_config(args.run_dir).objective.kind, metrics)}")
    out = Path(args.run_dir) / f"eval-pairs-{_slug(args.pairs)}-step{step}.json"
    out.write_text(json.dumps({"step": step, "file": args.pairs, **metrics}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from lmx.errors import DataError
    from lmx.generate import Generator, TextStream, read_prompts
    from lmx.runs import load_run
    from lmx.sampling import Sampling

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if (args.prompt is None) == (args.prompts_file is None):
        raise DataError("give exactly one of --prompt and --prompts-file")
    texts, names = ([args.prompt], ["--prompt"]) if args.prompt is not None else read_prompts(args.prompts_file)
    run = load_run(args.run_dir, args.step)
    tokenizer = run.require_tokenizer()
    prompts = tokenizer.encode_batch(texts)
    batch = 1 if len(prompts) == 1 else min(args.batch_size, len(prompts))
    generator = Generator(run.setup.model, run.params, run.setup.mesh, run.cfg.mesh.rules, batch, tokenizer.eos_id)
    if len(prompts) == 1:
        stream = TextStream(tokenizer, texts[0])
        result = generator.generate(prompts, args.max_new_tokens, sampling, lambda _, t: stream.add(t), names)[0]
        stream.finish(result.finish_reason)
        return 0
    results = generator.generate(prompts, args.max_new_tokens, sampling, names=names)
    for name, text, result in zip(names, texts, results, strict=True):
        print(f"=== {name} ({len(result.tokens)} tokens, stopped by {result.finish_reason})")
        print(text + tokenizer.decode(result.tokens))
    return 0


def _cmd_data_icl(args: argparse.Namespace) -> int:
    from lmx.data.icl import write_recall_task

    paths = write_recall_task(args.out, args.documents, args.seed)
    print(f"wrote {paths['corpus']} ({args.documents} episodes) and {paths['task']}")
    print(f"pretrain on it with --set data.corpus='text:{paths['corpus']}/*.txt'")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from lmx.data.synth import prompts_in, write_synth_tasks

    exclude = prompts_in(args.exclude)
    paths = write_synth_tasks(args.out, args.train, args.heldout, args.tasks, args.seed, exclude)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from lmx.data.corpus import Corpus
    from lmx.data.tokenizer import train_tokenizer

    corpus = Corpus.parse(args.corpus, args.validation_fraction)
    start = time.perf_counter()
    texts = (d.text for d in corpus.documents("train"))
    tok = train_tokenizer(
        texts, args.out, args.vocab_size, args.model_type, max_bytes=args.max_bytes, source=f"corpus {args.corpus!r}"
    )
    print(f"wrote {args.out}: {args.model_type}, vocab {tok.vocab_size}, in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.data.prepare import ensure_prepared

    cfg = load_config(args.config, args.set)
    start = time.perf_counter()
    _, prepared_dir, meta = ensure_prepared(cfg.data, cfg.model.vocab_size)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['documents']:,} documents, {info['tokens']:,} tokens, {info['utf8_bytes']:,} bytes")
    print(f"prepared data in {prepared_dir} ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.scaling.flops import flops_table

    cfg = load_config(args.config, args.set)
    rows = flops_table(cfg)
    width = max(len(name) for name, _ in rows)
    print(f"{cfg.name} ({args.config})")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmx.scaling import launch
    from lmx.scaling.plan import finished_flops_per_s, format_plan, measure_flops_per_s, plan, shape_key
    from lmx.scaling.sweep import load_sweep

    sweep = load_sweep(args.file)
    runs = sweep.runs()
    sweep_dir = Path(args.dir or f"runs/sweeps/{sweep.name}")
    if args.dry_run:
        if args.flops_per_s:
            rates: dict[str, float] | float = args.flops_per_s
            source = "the given rate"
        else:
            rates = finished_flops_per_s(sweep_dir, sweep.flops)
            source = "finished runs" if rates else ""
            if not args.no_measure:
                missing = {shape_key(r.config): r.config for r in runs if shape_key(r.config) not in rates}
                for key, cfg in missing.items():
                    print(f"measuring {cfg.model.n_layers} layers x d_model {cfg.model.d_model} ...", flush=True)
                    rates[key] = measure_flops_per_s(cfg, sweep.flops)
                source = "timed steps of each model shape" + (" and finished runs" if source else "")
        print(f"sweep {sweep.name}: {len(runs)} runs in {sweep_dir}, FLOPs by {sweep.flops!r}")
        print(format_plan(sweep, plan(sweep, runs, rates)))
        if source:
            print(f"estimated times from the FLOP/s of {source}")
        return 0
    if args.launcher == "slurm":
        path = launch.write_slurm(sweep, runs, sweep_dir, directives=args.sbatch_option, max_parallel=args.max_parallel)
        print(f"wrote {path} ({len(runs)} array tasks) and {sweep_dir / 'commands.txt'}; submit with: sbatch {path}")
        return 0
    report = launch.launch_local(runs, sweep_dir)
    print(launch.format_report(report))
    if report.interrupted or report.not_started:
        return 130
    return 0 if report.ok else 1


def _cmd_fit(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.scaling.bootstrap import format_fit, run_fit
    from lmx.scaling.points import load_points

    points = load_points(args.source, args.metric)
    if points.unfinished:
        print(f"note: {len(points.unfinished)} runs have no summary.json yet, left out: {', '.join(points.unfinished)}")
    approaches = list(dict.fromkeys(args.approach))
    fits = {}
    for approach in approaches:
        fits[approach] = run_fit(
            points,
            approach,
            args.bootstrap,
            args.budget,
            with_E=not args.no_e,
            confidence=args.confidence,
            starts=args.starts,
        )
        print(format_fit(fits[approach]))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(fits[approaches[0]] if len(fits) == 1 else fits, indent=2) + "\n")
        print(f"wrote {out}")
    plots_dir = args.plots or (str(Path(args.json).parent) if args.json else None)
    if plots_dir:
        for path in _fit_plots(points, fits, Path(plots_dir), Path(args.source)):
            print(f"wrote {path}")
    return 0


def _fit_plots(points, fits, out_dir, source):
    from lmx.scaling import plot

    written = []
    if any(len(index) >= 3 for index in points.groups().values()):
        written.append(plot.plot_isoflop(points, fits, out_dir / "isoflop.png"))
    if "2" in fits or any("budget" in f for f in fits.values()):
        written.append(plot.plot_optimal(fits, out_dir / "optimal.png"))
    if source.is_dir():
        runs = sorted(p.parent for p in source.glob("*/metrics.jsonl"))
        written.append(plot.plot_loss_curves(runs, out_dir / "loss_curves.png"))
    return written


def _config_arguments(parser: argparse.ArgumentParser, help: str = "") -> None:
    """The config file argument and its ``--set KEY=VALUE`` overrides."""
    parser.add_argument("config", help=help or "config file (a Python module defining get_config(), or a config.json)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.d_model=512"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    smoke = sub.add_parser("smoke", help="a few training steps on random tokens")
    _config_arguments(smoke)
    smoke.add_argument("--steps", type=int, default=5)
    smoke.set_defaults(func=_cmd_smoke)

    train = sub.add_parser("train", help="train a model (resumes from the run directory's latest checkpoint)")
    _config_arguments(train)
    train.add_argument("--run-dir", help="where checkpoints, metrics and the summary go (default runs/<name>)")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "eval", help="evaluate a run: loss, perplexity, bits per byte; or k-shot accuracy on a task (--task)"
    )
    evaluate.add_argument("run_dir", help="a run directory written by `lmx train`")
    evaluate.add_argument("--split", choices=["validation", "train"], default="validation")
    evaluate.add_argument("--text", help="evaluate on this corpus instead: text:GLOB | jsonl:GLOB@FIELD | stdlib")
    evaluate.add_argument("--tokens", help="evaluate on a .npy file of token ids instead (one stream)")
    evaluate.add_argument("--batches", type=int, default=0, help="evaluate at most this many batches (0: all)")
    evaluate.add_argument("--step", type=int, help="a checkpoint step other than the latest")
    evaluate.add_argument("--task", help="multiple-choice JSONL ({context, choices, answer} per line)")
    evaluate.add_argument(
        "--shots", type=int, nargs="+", default=[0], help="in-context examples per item (several: one row each)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="which items become shots")
    evaluate.add_argument("--separator", default="\n", help="between shots and the item (default: a newline)")
    evaluate.add_argument("--responses", help="SFT-format JSONL: greedy exact-match accuracy of the answers")
    evaluate.add_argument("--pairs", help="preference JSONL: a reward-model or preference run's pairwise metrics")
    evaluate.add_argument("--batch-size", type=int, default=32, help="prompts answered together (--responses)")
    evaluate.add_argument("--max-new-tokens", type=int, default=0, help="--responses: 0 = longest reference + 4")
    evaluate.set_defaults(func=_cmd_eval)

    generate = sub.add_parser("generate", help="generate text from a run's checkpoint (KV cache)")
    generate.add_argument("run_dir", help="a run directory written by `lmx train`")
    generate.add_argument("--prompt", help="one prompt; its tokens stream to the terminal")
    generate.add_argument("--prompts-file", help="prompts, one per line (or JSONL with a 'prompt' field)")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: off)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    generate.add_argument("--step", type=int, help="a checkpoint step other than the latest")
    generate.set_defaults(func=_cmd_generate)

    flops = sub.add_parser("flops", help="parameter counts and FLOPs per token of a config (three definitions)")
    _config_arguments(flops)
    flops.set_defaults(func=_cmd_flops)

    sweep = sub.add_parser("sweep", help="plan or launch a sweep file (a Python module defining get_sweep())")
    sweep.add_argument("file", help="sweep file, e.g. configs/sweeps/isoflop_tiny.py")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan as a table; run nothing")
    sweep.add_argument("--dir", help="sweep directory (default runs/sweeps/<sweep name>)")
    sweep.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: run one after another here; slurm: write an sbatch job array",
    )
    sweep.add_argument("--flops-per-s", type=float, help="--dry-run: estimate times from this rate")
    sweep.add_argument(
        "--no-measure", action="store_true", help="--dry-run: do not time steps of shapes that no finished run measured"
    )
    sweep.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="slurm: an extra #SBATCH option, e.g. --gres=gpu:1 (repeatable)",
    )
    sweep.add_argument("--max-parallel", type=int, default=0, help="slurm: at most this many tasks at once")
    sweep.set_defaults(func=_cmd_sweep)

    fit = sub.add_parser("fit", help="fit scaling laws to a sweep directory or a CSV (N,D,loss[,C])")
    fit.add_argument("source", help="a sweep directory (runs with summary.json) or a CSV file")
    fit.add_argument(
        "--approach",
        nargs="+",
        choices=["power", "2", "3"],
        default=["3"],
        help="power: L(C) = E + a C^-b; 2: IsoFLOP parabolas; 3: L(N,D) = E + A/N^alpha + B/D^beta",
    )
    fit.add_argument("--bootstrap", type=int, default=0, metavar="N", help="resamples for confidence intervals")
    fit.add_argument("--budget", type=float, help="report N_opt and D_opt (with intervals) at this compute")
    fit.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    fit.add_argument("--no-e", action="store_true", help="power: fit L(C) = a C^-b without the constant E")
    fit.add_argument(
        "--starts", type=int, default=64, help="approach 3: L-BFGS-B starts from the best grid points (0: all 4,500)"
    )
    fit.add_argument("--metric", default="eval/loss", help="sweep directories: the summary's final_eval key")
    fit.add_argument("--json", help="write the fit here (one approach: its keys; several: keyed by approach)")
    fit.add_argument("--plots", help="directory for the PNG plots (default: the --json file's directory)")
    fit.set_defaults(func=_cmd_fit)

    tokenizer = sub.add_parser("tokenizer", help="SentencePiece tokenizers").add_subparsers(
        dest="action", required=True
    )
    train_tok = tokenizer.add_parser("train", help="train a tokenizer on a corpus")
    train_tok.add_argument("--corpus", default="stdlib", help="stdlib | text:GLOB | jsonl:GLOB@FIELD")
    train_tok.add_argument("--vocab-size", type=int, required=True)
    train_tok.add_argument("--out", required=True, help="path of the .model file to write")
    train_tok.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    train_tok.add_argument("--max-bytes", type=int, default=10_000_000, help="training text budget")
    train_tok.add_argument("--validation-fraction", type=float, default=0.02, help="held out, never trained on")
    train_tok.set_defaults(func=_cmd_tokenizer_train)

    data = sub.add_parser("data", help="corpus preparation").add_subparsers(dest="action", required=True)
    prep = data.add_parser("prepare", help="tokenize a config's corpus once (trains its tokenizer if missing)")
    _config_arguments(prep, "config file; its data section names corpus, tokenizer and directory")
    prep.set_defaults(func=_cmd_data_prepare)
    icl = data.add_parser("icl-task", help="write the in-context recall task: a pretraining corpus and task.jsonl")
    icl.add_argument("out", help="output directory")
    icl.add_argument("--documents", type=int, default=4000, help="pretraining episodes")
    icl.add_argument("--seed", type=int, default=0)
    icl.set_defaults(func=_cmd_data_icl)
    synth = data.add_parser("synth-tasks", help="write checkable SFT and preference data (copy/reverse/sort/add)")
    synth.add_argument("out", help="output directory")
    synth.add_argument("--train", type=int, default=4000, help="training examples per file")
    synth.add_argument("--heldout", type=int, default=200, help="held-out examples per file")
    synth.add_argument("--tasks", nargs="+", default=["copy", "reverse", "sort", "add"])
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="files (or globs) whose prompts no written file may hold, e.g. the SFT files a model was trained on",
    )
    synth.set_defaults(func=_cmd_data_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LmxError as e:
        print(f"lmx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmx {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> int:
    """The console script: `main` in a process whose host allocator keeps the memory XLA frees
    (`lmx.hostmem`; in-process callers such as tests call `main` and leave malloc as it is)."""
    from lmx.hostmem import retain_freed_memory

    retain_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(run())
