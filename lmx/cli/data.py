"""`lmx tokenizer` and `lmx data`: tokenizers, prepared corpora and generated data sets."""

from __future__ import annotations

import argparse
import time

from lmx.cli.common import config_arguments


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


def add_commands(sub: argparse._SubParsersAction) -> None:
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
    config_arguments(prep, "config file; its data section names corpus, tokenizer and directory")
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
