"""`lmx eval`: a run's loss and bits per byte, k-shot tasks, exact match, preference pairs and
rewards of its answers (rollouts)."""

from __future__ import annotations

import argparse

from lmx import atomic
from lmx.cli.common import distributed_arguments, slug


def _cmd_eval(args: argparse.Namespace) -> int:
    sources = (args.task, args.responses, args.pairs, args.rollouts, args.text, args.tokens)
    if sum(x is not None for x in sources) > 1:
        from lmx.errors import DataError

        raise DataError("give at most one of --task, --responses, --pairs, --rollouts, --text and --tokens")
    scores_items = any(x is not None for x in (args.task, args.responses, args.pairs, args.rollouts))
    if args.limit < 0 or (args.limit and not scores_items):
        from lmx.errors import ConfigError

        raise ConfigError(
            f"--limit {args.limit}: a count >= 0 of the items of --task, --responses, --pairs or --rollouts "
            "(a loss evaluation takes --batches)"
        )
    import jax

    if jax.process_count() > 1 and scores_items:
        from lmx.errors import ConfigError

        raise ConfigError(
            "--task, --responses, --pairs and --rollouts run on one process; loss and bits per byte run on many"
        )
    if args.rollouts:
        return _eval_rollouts(args)
    if args.task:
        return _eval_task(args)
    if args.responses:
        return _eval_responses(args)
    if args.pairs:
        return _eval_pairs(args)
    import json
    from pathlib import Path

    from lmx.infer.evaluate import evaluate_run

    step, result = evaluate_run(args.run_dir, args.split, args.batches, args.step, args.text, args.tokens)
    source = args.text or args.tokens or args.split
    print(
        f"{args.run_dir} step {step}, {source}: loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, "
        f"{result.bits_per_byte:.4f} bits/byte ({result.tokens:,} tokens, {result.bytes:,} bytes)"
    )
    if args.text or args.tokens:
        out = Path(args.run_dir) / f"eval-{slug(str(source))}-step{step}.json"
    else:
        out = Path(args.run_dir) / f"eval-{args.split}-step{step}.json"
    if jax.process_index() == 0:  # one writer (the others' stdout is closed)
        atomic.write_text(out, json.dumps({"step": step, "source": str(source), **result.to_dict()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_task(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.infer.fewshot import ChoiceScorer, evaluate_choices, read_choice_items
    from lmx.infer.runs import load_run
    from lmx.parallel.mapping import eval_batch_size

    items = read_choice_items(args.task)[: args.limit or None]
    run = load_run(args.run_dir, args.step)
    tokenizer, cfg, mesh = run.require_tokenizer(), run.cfg, run.mesh
    scorer = ChoiceScorer(run.model, run.params, mesh, cfg.mesh.rules, eval_batch_size(cfg, mesh), cfg.data.seq_len)
    rows = []
    for shots in args.shots:
        result = evaluate_choices(scorer, tokenizer, items, shots, args.seed, args.separator)
        print(
            f"{args.task} {shots}-shot: accuracy {result.accuracy:.3f} (per token {result.accuracy_per_token:.3f}, "
            f"per byte {result.accuracy_per_byte:.3f}) over {result.items} items"
        )
        rows.append({"step": run.step, "task": str(args.task), **result.to_dict()})
    out = Path(args.run_dir) / f"eval-task-{slug(str(args.task))}-step{run.step}.json"
    atomic.write_text(out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_responses(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.infer.chat_eval import exact_match_run

    step, result = exact_match_run(
        args.run_dir, args.responses, args.step, args.batch_size, args.max_new_tokens, limit=args.limit
    )
    tasks = ", ".join(f"{task} {acc:.3f}" for task, acc in result.per_task.items())
    print(
        f"{args.responses}: greedy exact match {result.accuracy:.3f} over {result.items} prompts"
        + (f" ({tasks})" if tasks else "")
    )
    out = Path(args.run_dir) / f"eval-responses-{slug(args.responses)}-step{step}.json"
    atomic.write_text(out, json.dumps({"step": step, "file": args.responses, **result.to_dict()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_rollouts(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.errors import ConfigError
    from lmx.infer.rollout_eval import rollouts_run

    if not args.reward:
        raise ConfigError("--rollouts needs --reward NAME (e.g. exact_match, or path/to/file.py:function)")
    step, m = rollouts_run(
        args.run_dir, args.rollouts, args.reward, args.samples, args.step, args.batch_size, args.max_new_tokens,
        args.temperature, args.seed, limit=args.limit,
    )  # fmt: skip
    each = ", ".join(f"{k[len('reward/') :]} {v:.3f}" for k, v in m.items() if k.startswith("reward/"))
    line = f"{args.rollouts}: greedy mean reward {m['reward']:.3f} ({each}) over {int(m['prompts'])} prompts"
    if args.samples:
        k = args.samples
        line += f"; {k} samples each: mean reward {m['sampled_reward']:.3f}, pass@{k} {m['pass_at_k']:.3f}"
    print(line)
    out = Path(args.run_dir) / f"eval-rollouts-{slug(args.rollouts)}-step{step}.json"
    record = {"step": step, "file": args.rollouts, "reward": args.reward, "samples": args.samples, "metrics": m}
    atomic.write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _eval_pairs(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmx.infer.chat_eval import evaluate_pairs_run
    from lmx.infer.runs import read_run_config
    from lmx.objectives.registry import objective_of

    step, metrics = evaluate_pairs_run(args.run_dir, args.pairs, args.step, limit=args.limit)
    describe = objective_of(read_run_config(args.run_dir)).describe
    print(f"{args.pairs}: {describe(metrics)}")
    for task, task_metrics in metrics["per_task"].items():  # the records' "task" field, when they have one
        print(f"  task {task}: {describe(task_metrics)}")
    out = Path(args.run_dir) / f"eval-pairs-{slug(args.pairs)}-step{step}.json"
    atomic.write_text(out, json.dumps({"step": step, "file": args.pairs, **metrics}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval",
        help="evaluate a run: loss, perplexity, bits per byte; or k-shot accuracy on a task (--task)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("run_dir", help="a run directory written by `lmx train`")
    evaluate.add_argument("--split", choices=["validation", "train"], default="validation")
    evaluate.add_argument("--text", help="evaluate on this corpus instead: text:GLOB | jsonl:GLOB@FIELD | stdlib")
    evaluate.add_argument("--tokens", help="evaluate on a .npy file of token ids instead (one stream)")
    evaluate.add_argument("--batches", type=int, default=0, help="evaluate at most this many batches (0: all)")
    evaluate.add_argument(
        "--limit",
        type=int,
        default=0,
        help="--task, --responses, --pairs, --rollouts: score only the file's first N items (0: all)",
    )
    evaluate.add_argument("--step", type=int, help="a checkpoint step other than the latest")
    evaluate.add_argument("--task", help="multiple-choice JSONL ({context, choices, answer} per line)")
    evaluate.add_argument(
        "--shots", type=int, nargs="+", default=[0], help="in-context examples per item (several: one row each)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="which items become shots (--task); the sampling seed (--rollouts)"
    )
    evaluate.add_argument("--separator", default="\n", help="between shots and the item (default: a newline)")
    evaluate.add_argument("--responses", help="SFT-format JSONL: greedy exact-match accuracy of the answers")
    evaluate.add_argument("--pairs", help="preference JSONL: a reward-model or preference run's pairwise metrics")
    evaluate.add_argument("--rollouts", help="prompt JSONL: mean --reward of the answers, and pass@k with --samples")
    evaluate.add_argument("--reward", help="--rollouts: rewards as in objective.rewards (NAME[=WEIGHT],...)")
    evaluate.add_argument("--samples", type=int, default=0, help="--rollouts: also sample k answers per prompt")
    evaluate.add_argument("--temperature", type=float, default=1.0, help="--rollouts --samples: sampling temperature")
    evaluate.add_argument("--batch-size", type=int, default=32, help="prompts answered together (--responses)")
    evaluate.add_argument(
        "--max-new-tokens",
        type=int,
        default=0,
        help="--responses: 0 = longest reference + 4; --rollouts: 0 = an RL run's own, else 32",
    )
    distributed_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_eval)
