"""`lmx generate`: text from a run's checkpoint."""

from __future__ import annotations

import argparse


def _cmd_generate(args: argparse.Namespace) -> int:
    from lmx.errors import ConfigError, DataError
    from lmx.infer.generate import Generator, TextStream, read_prompts
    from lmx.infer.runs import load_run, read_run_config
    from lmx.infer.sampling import Sampling
    from lmx.objectives.registry import objective_of

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if (args.prompt is None) == (args.prompts_file is None):
        raise DataError("give exactly one of --prompt and --prompts-file")
    texts, names = ([args.prompt], ["--prompt"]) if args.prompt is not None else read_prompts(args.prompts_file)
    cfg = read_run_config(args.run_dir)
    if not objective_of(cfg).generates:  # checked before anything is loaded
        raise ConfigError(
            f"{args.run_dir}: objective.kind={cfg.objective.kind!r} is not a language model, it scores "
            "sequences; evaluate it with lmx eval --pairs"
        )
    run = load_run(args.run_dir, args.step, cfg=cfg)
    tokenizer = run.require_tokenizer()
    prompts = tokenizer.encode_batch(texts)
    batch = 1 if len(prompts) == 1 else min(args.batch_size, len(prompts))
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, batch, tokenizer.eos_id)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    generate = sub.add_parser(
        "generate",
        help="generate text from a run's checkpoint (KV cache)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    generate.add_argument("run_dir", help="a run directory written by `lmx train`")
    generate.add_argument("--prompt", help="one prompt; its tokens stream to the terminal")
    generate.add_argument("--prompts-file", help="prompts, one per line (or JSONL with a 'prompt' field)")
    generate.add_argument("--max-new-tokens", type=int, default=64, help="tokens to add to each prompt at most")
    generate.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: off)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    generate.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    generate.add_argument("--step", type=int, help="a checkpoint step other than the latest")
    generate.set_defaults(func=_cmd_generate)
