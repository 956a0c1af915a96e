"""`lmx coord-check`: does a parametrization keep every layer's activations the same size as the model widens?"""

from __future__ import annotations

import argparse

from lmx.cli.common import config_arguments


def _cmd_coord_check(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.scaling.coord_check import RATIO, TOLERANCE, coord_check, write_results

    cfg = load_config(args.config, args.set)
    results = coord_check(cfg, args.widths, args.depths, args.parametrizations, args.steps, args.seeds, args.tokens)
    written = write_results(results, args.out)
    print(
        f"coordinate check of {args.config}: widths {results['widths']}, depths {results['depths']}, "
        f"{args.steps} steps at learning rate {cfg.optim.learning_rate:g}, {args.seeds} seeds, "
        f"a batch of {args.tokens} distinct tokens; "
        f"shapes {RATIO}x apart must keep every layer's mean |output| within 1/{TOLERANCE:g} .. {TOLERANCE:g}"
    )
    for p, v in results["verdicts"].items():
        w = v["worst"]
        worst = f"worst {w['ratio']:.3g}" + (
            f" ({w['layer']}, step {w['step']}, width {w['from']['width']} -> {w['to']['width']}, "
            f"depth {w['from']['depth']} -> {w['to']['depth']})"
            if "layer" in w
            else ""
        )
        verdict = "PASS" if v["pass"] else f"FAIL ({v['failures']} ratios outside)"
        print(f"  {p:<10} {verdict}: {worst}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    cc = sub.add_parser(
        "coord-check",
        help="train a config a few Adam steps at several widths and check each layer's activation size (muP)",
    )
    config_arguments(cc)
    cc.add_argument("--widths", type=int, nargs="+", required=True, help="d_model values, e.g. 64 128 256 512")
    cc.add_argument("--depths", type=int, nargs="+", default=[], help="n_layers values (default: the config's)")
    cc.add_argument(
        "--parametrizations", nargs="+", default=["sp", "mup"], help="any of sp, mup, completep (default: sp mup)"
    )
    cc.add_argument("--steps", type=int, default=5, help="Adam steps per shape (default 5)")
    cc.add_argument("--seeds", type=int, default=3, help="initialisations per shape, averaged (default 3)")
    cc.add_argument("--tokens", type=int, default=4, help="distinct tokens in the fixed batch (default 4)")
    cc.add_argument("--out", default="runs/coord_check", help="directory for coord_check.json and the plots")
    cc.set_defaults(func=_cmd_coord_check)
