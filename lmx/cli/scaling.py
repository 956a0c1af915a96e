"""`lmx flops`, `lmx sweep` and `lmx fit`: scaling studies."""

from __future__ import annotations

import argparse

from lmx import atomic
from lmx.cli.common import config_arguments
from lmx.errors import ConfigError


def _cmd_flops(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.model.flops import flops_table

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
        import jax

        devices, backend = jax.device_count(), jax.default_backend()
        print(f"sweep {sweep.name}: {len(runs)} runs in {sweep_dir}, FLOPs by {sweep.flops!r}")
        print(format_plan(sweep, plan(sweep, runs, rates, devices, backend)))
        if source:
            print(f"estimated times from the FLOP/s of {source}")
        print(f"memory/device: lmx plan's estimate on this machine's {devices} {backend} device(s)")
        return 0
    if args.launcher == "local" and (args.nodes > 1 or args.tasks_per_node > 1):
        raise ConfigError("--nodes and --tasks-per-node apply to --launcher slurm (multi-process runs under srun)")
    if args.launcher == "slurm":
        path = launch.write_slurm(
            sweep,
            runs,
            sweep_dir,
            directives=args.sbatch_option,
            max_parallel=args.max_parallel,
            nodes=args.nodes,
            tasks_per_node=args.tasks_per_node,
        )
        print(f"wrote {path} ({len(runs)} array tasks) and {sweep_dir / 'commands.txt'}; submit with: sbatch {path}")
        return 0
    report = launch.launch_local(runs, sweep_dir)
    print(launch.format_report(report))
    if report.interrupted or report.not_started:
        return 130
    return 0 if report.ok else 1


def _cmd_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmx.scaling.bootstrap import format_fit, public, run_fit
    from lmx.scaling.points import load_points, write_points

    points = load_points(args.source, args.metric)
    if points.unfinished:
        print(f"note: {len(points.unfinished)} runs have no summary.json yet, left out: {', '.join(points.unfinished)}")
    if points.unusable:
        count = f"{len(points.unusable)} run" + ("s" if len(points.unusable) > 1 else "")
        why = "; ".join(f"{name}/{reason}" for name, reason in points.unusable)
        print(f"note: {count} left out, their files cannot be used: {why}")
    if args.save_points:  # before the fits: the points are kept even when a fit fails
        saved = write_points(points, args.save_points)
        print(f"wrote {saved} ({len(points)} points)")
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
        atomic.write_json(out, public(fits[approaches[0]] if len(fits) == 1 else fits))
        print(f"wrote {out}")
    plots_dir = args.plots or (str(Path(args.json).parent) if args.json else None)
    if not args.json and not plots_dir and not args.save_points:
        print("nothing written: give --json FILE (the fit) and/or --plots DIR (its plots) to keep them")
    if plots_dir:
        _fit_plots(points, fits, Path(plots_dir), Path(args.source), args.metric)
    return 0


def _fit_plots(points, fits, out_dir, source, metric) -> None:
    """Writes (and names) isoflop.png (when a budget has >= 3 runs), optimal.png (approach 2 or 3
    fitted), approach3.png (approach 3 fitted: drawn only then) and, from a sweep directory,
    loss_curves.png; every one colours a budget alike."""
    from lmx.scaling import plot, plot_fits

    colors = plot.BudgetColors.of(points)
    if not source.is_dir():
        loss_label = "loss"  # a CSV's loss column: its units are the CSV's
    elif metric == "eval/loss":
        loss_label = "validation loss (nats/token)"
    else:
        loss_label = f"final {metric}"
    if any(len(index) >= 3 for index in points.groups().values()):
        print(f"wrote {plot.plot_isoflop(points, fits, out_dir / 'isoflop.png', colors, loss_label)}")
    if any(plot_fits.has_allocation(fits[k]) for k in ("2", "3") if k in fits):
        print(f"wrote {plot_fits.plot_optimal(points, fits, out_dir / 'optimal.png', colors)}")
    if "3" in fits:
        print(f"wrote {plot_fits.plot_approach3(points, fits['3'], out_dir / 'approach3.png', colors, loss_label)}")
    if not source.is_dir():
        print("no loss_curves.png: a CSV holds no training curves (they come from a sweep directory's runs)")
        return
    # The runs the fit used: unfinished and unusable ones (named above) are left out.
    runs = sorted(source / name for name in points.names if (source / name / "metrics.jsonl").is_file())
    if not runs:
        print(f"no loss_curves.png: none of the runs in {source} has a metrics.jsonl")
        return
    title = f"training loss curves: {source.name} ({len(runs)} runs)"
    print(f"wrote {plot.plot_loss_curves(runs, out_dir / 'loss_curves.png', colors=colors, title=title)}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    flops = sub.add_parser("flops", help="parameter counts and FLOPs per token of a config (every definition)")
    config_arguments(flops)
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
    sweep.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="slurm: nodes per run; above 1, each run of the sweep is one multi-process run (through srun)",
    )
    sweep.add_argument(
        "--tasks-per-node",
        type=int,
        default=1,
        metavar="T",
        help="slurm: processes per node of each run (the GPUs per node for one process per GPU; ask for the "
        "GPUs with --sbatch-option=--gpus-per-node=T); above 1, each run is one multi-process run (through srun)",
    )
    sweep.set_defaults(func=_cmd_sweep)

    fit = sub.add_parser("fit", help="fit scaling laws to a sweep directory or a CSV (N,D,loss[,C,budget])")
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
    fit.add_argument(
        "--save-points",
        metavar="OUT.csv",
        help="write the points the fit used (name, budget, N, D, C, loss, and from a sweep directory each run's "
        "steps, evaluation, time and shape) as a CSV that `lmx fit` reads back to the same fits",
    )
    fit.set_defaults(func=_cmd_fit)
