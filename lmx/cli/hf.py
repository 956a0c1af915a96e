"""`lmx export hf` and `lmx import hf`: lmx runs and Hugging Face transformers checkpoints, both ways."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lmx.errors import ConfigError


def _with_hf_packages(command: str, run: Callable[[], object]) -> int:
    """Runs `run`; a package of the hf extra that is not installed is one line, not a traceback."""
    try:
        run()
    except ImportError as e:
        raise ConfigError(f"lmx {command} hf needs the {e.name or 'hf'} package: pip install 'lmx[hf]'") from None
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    def run() -> None:
        from lmx.hf.export import export_hf

        export_hf(args.run_dir, args.out_dir, step=args.step, dtype=args.dtype)

    return _with_hf_packages("export", run)


def _cmd_import(args: argparse.Namespace) -> int:
    def run() -> None:
        from lmx.hf.importer import import_hf

        import_hf(args.hf_dir, args.run_dir, seq_len=args.seq_len)

    return _with_hf_packages("import", run)


def add_commands(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a run's model in another format (Hugging Face transformers)")
    formats = export.add_subparsers(dest="format", required=True)
    hf = formats.add_parser(
        "hf",
        help="a transformers checkpoint (Llama, or Qwen3 with QK-norm) with its tokenizer",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hf.add_argument("run_dir", help="a run directory (of a language model: pretraining, SFT, DPO, ...)")
    hf.add_argument("out_dir", help="a new directory for the checkpoint")
    hf.add_argument("--step", type=int, help="the checkpoint step (default: the latest)")
    hf.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights' dtype on disk")
    hf.set_defaults(func=_cmd_export)

    imp = sub.add_parser("import", help="turn another format's checkpoint into an lmx run (Hugging Face transformers)")
    formats = imp.add_subparsers(dest="format", required=True)
    hf = formats.add_parser(
        "hf",
        help="a local transformers checkpoint (Llama, Mistral without sliding window, Qwen3)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hf.add_argument("hf_dir", help="a directory with config.json, safetensors weights and the tokenizer")
    hf.add_argument("run_dir", help="a new lmx run directory")
    hf.add_argument("--seq-len", type=int, default=1024, help="the run's data.seq_len (at most the model's context)")
    hf.set_defaults(func=_cmd_import)
