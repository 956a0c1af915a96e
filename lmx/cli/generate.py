"""`lmx generate`: text from a run's checkpoint, as raw continuation or as a chat answer."""

from __future__ import annotations

import argparse
import sys


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _cmd_generate(args: argparse.Namespace) -> int:
    from lmx.data.chat import ChatTemplate, Message
    from lmx.decode.generate import Generator, TextStream, check_chat_prompts, read_chat_prompts, read_prompts
    from lmx.decode.sampling import Sampling
    from lmx.errors import ConfigError, DataError
    from lmx.infer.runs import load_run, read_run_config
    from lmx.objectives.chat import trained_on_chat_template
    from lmx.objectives.registry import objective_of

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if (args.prompt is None) == (args.prompts_file is None):
        raise DataError("give exactly one of --prompt and --prompts-file")
    cfg = read_run_config(args.run_dir)
    objective = objective_of(cfg)
    if not objective.generates:  # checked before anything is loaded
        raise ConfigError(
            f"{args.run_dir}: objective.kind={cfg.objective.kind!r} is not a language model, it scores "
            "sequences; evaluate it with lmx eval --pairs"
        )
    trained_chat = trained_on_chat_template(objective)
    chat = trained_chat if getattr(args, "chat", None) is None else args.chat
    if chat and not trained_chat:  # the user's choice, but its answers may be poor
        _note(
            f"{args.run_dir} was not trained on the chat template (objective.kind={cfg.objective.kind!r}); "
            "--chat renders the prompts through it all the same"
        )
    if chat:
        if args.prompt is not None:
            conversations, names = [[Message("user", args.prompt)]], ["--prompt"]
            check_chat_prompts(conversations, names)
        else:
            conversations, names = read_chat_prompts(args.prompts_file)
    else:
        texts, names = ([args.prompt], ["--prompt"]) if args.prompt is not None else read_prompts(args.prompts_file)

    run = load_run(args.run_dir, args.step, cfg=cfg)
    tokenizer = run.require_tokenizer()
    if chat:
        template = ChatTemplate(tokenizer)
        prompts = [template.prompt_ids(messages).tolist() for messages in conversations]
    else:
        prompts = tokenizer.encode_batch(texts)
    batch = 1 if len(prompts) == 1 else min(args.batch_size, len(prompts))
    pad_id = max(tokenizer.pad_id, 0)
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, batch, tokenizer.eos_id, pad_id)
    # "At most": within the model's context, rather than an error when the default does not fit.
    longest = max(len(p) for p in prompts)
    max_new_tokens = args.max_new_tokens
    if 0 < generator.max_len - longest < max_new_tokens:
        max_new_tokens = generator.max_len - longest
        _note(
            f"--max-new-tokens {args.max_new_tokens} lowered to {max_new_tokens}: the longest prompt holds "
            f"{longest} tokens of the model's context of {generator.max_len}"
        )

    if len(prompts) == 1:  # streamed: the continuation of the prompt, or the answer alone
        stream = TextStream(tokenizer, "" if chat else texts[0])
        result = generator.generate(prompts, max_new_tokens, sampling, lambda _, t: stream.add(t), names)[0]
        stream.finish(result.finish_reason)
        return 0
    results = generator.generate(prompts, max_new_tokens, sampling, names=names)
    for i, (name, result) in enumerate(zip(names, results, strict=True)):
        print(f"=== {name} ({len(result.tokens)} tokens, stopped by {result.finish_reason})")
        if chat:
            for message in conversations[i]:
                print(f"[{message.role}] {message.content}")
            print(f"[assistant] {tokenizer.decode(result.tokens)}")
        else:
            print(texts[i] + tokenizer.decode(result.tokens))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    generate = sub.add_parser(
        "generate",
        help="generate text from a run's checkpoint (KV cache): a continuation, or a chat answer",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    generate.add_argument("run_dir", help="a run directory written by `lmx train`")
    generate.add_argument("--prompt", help="one prompt; its tokens stream to the terminal")
    generate.add_argument(
        "--prompts-file",
        help="prompts, one per line, or JSONL: {'prompt'} per line (chat mode also: 'system', or 'messages')",
    )
    # No default of its own (SUPPRESS keeps "(default: None)" out of --help): it follows the run.
    generate.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="render each prompt as a user turn of the chat template, answer until EOS and print the answer "
        "alone; --no-chat continues the raw text (default: on for runs trained on the template, such as sft "
        "and preference; off for pretraining)",
    )
    generate.add_argument(
        "--max-new-tokens", type=int, default=64, help="tokens to add to each prompt at most (within the context)"
    )
    generate.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: off)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    generate.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    generate.add_argument("--step", type=int, help="a checkpoint step other than the latest")
    generate.set_defaults(func=_cmd_generate)
