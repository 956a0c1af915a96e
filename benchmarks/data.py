"""Throughput of `prepare` on the stdlib corpus and of the pretraining loader.

    python benchmarks/data.py [--vocab-size 8192] [--batch 32] [--seq-len 512] [--batches 200] [--out DIR]
    python benchmarks/data.py --smoke [--out DIR]   # seconds: the email package's sources

Writes benchmarks/results/data.json (`--out DIR`: DIR/data.json). Compare the loader's tokens/s
with the tokens/s at which configs/small.py trains (benchmarks/train_step.py): the target is at
least 10x.

`--smoke`: the corpus is the standard library's email package (20 files, a fifth of them for
validation), vocabulary 512, 4 loader batches of 8x32; the tokenizer and token files go to a
temporary directory under the output directory (`--out`, or a new temporary directory; never
benchmarks/results/ or data/).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import (
    SMOKE_CORPUS,
    SMOKE_VALIDATION_FRACTION,
    SMOKE_VOCAB,
    add_common_arguments,
    parse_args,
    write_results,
)

from lmx.data.corpus import Corpus
from lmx.data.prepare import prepare
from lmx.data.pretrain import pretrain_batches
from lmx.data.tokenizer import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batches", type=int, default=200)
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"vocab_size": SMOKE_VOCAB, "batch": 8, "seq_len": 32, "batches": 4})
    corpus = Corpus.parse(SMOKE_CORPUS, SMOKE_VALIDATION_FRACTION) if args.smoke else Corpus.parse("stdlib")
    with tempfile.TemporaryDirectory(dir=args.out if args.smoke else None) as tmp:
        tmp = Path(tmp)
        tokenizer = train_tokenizer((d.text for d in corpus.documents("train")), tmp / "sp.model", args.vocab_size)
        start = time.perf_counter()
        meta = prepare(corpus, tokenizer, tmp / "prepared")
        prepare_s = time.perf_counter() - start
        tokens = sum(s["tokens"] for s in meta["splits"].values())
        print(f"prepare: {tokens:,} tokens in {prepare_s:.2f} s = {tokens / prepare_s:,.0f} tokens/s")
        loader = iter(pretrain_batches(tmp / "prepared", "train", args.seq_len, args.batch, seed=0))
        next(loader)  # start the reader threads
        start = time.perf_counter()
        for _ in range(args.batches):
            next(loader)
        loader_s = time.perf_counter() - start
        loader_tps = args.batches * args.batch * args.seq_len / loader_s
        print(f"loader: {args.batches} batches of {args.batch}x{args.seq_len} = {loader_tps:,.0f} tokens/s")
    out = write_results(
        "data",
        {
            "vocab_size": args.vocab_size,
            "prepare_tokens": tokens,
            "prepare_s": prepare_s,
            "prepare_tokens_per_s": tokens / prepare_s,
            "loader_batch": [args.batch, args.seq_len],
            "loader_tokens_per_s": loader_tps,
        },
        args.out,
        args.smoke,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
