"""`lmx launch`: one training run over several processes, on this machine or under SLURM."""

from __future__ import annotations

import argparse

from lmx.cli.common import config_arguments


def _train_args(args: argparse.Namespace) -> list[str]:
    """The `lmx train` arguments every process gets."""
    out = [args.config]
    for override in args.set:
        out += ["--set", override]
    if args.run_dir:
        out += ["--run-dir", args.run_dir]
    if getattr(args, "extend", False):
        out.append("--extend")
    return out


def _cmd_local(args: argparse.Namespace) -> int:
    from lmx.cluster.local import launch_local

    return launch_local(
        _train_args(args),
        args.processes,
        devices_per_process=args.devices_per_process,
        peer_timeout_s=args.peer_timeout,
    )


def _cmd_slurm(args: argparse.Namespace) -> int:
    from lmx.cluster import slurm
    from lmx.config import load_config

    run_dir = args.run_dir or f"runs/{load_config(args.config, args.set).name}"
    train_args = _train_args(argparse.Namespace(**{**vars(args), "run_dir": None}))
    script = slurm.write_train_script(
        train_args,
        run_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        per=args.per,
        directives=args.sbatch_option,
    )
    print(f"wrote {script}")
    if args.submit:
        print(f"submitted job {slurm.submit(script)}")
    else:
        print(f"submit it with: sbatch {script}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    launch = sub.add_parser("launch", help="one training run over several processes (local, or SLURM)")
    kinds = launch.add_subparsers(dest="launcher", required=True)

    local = kinds.add_parser(
        "local",
        help="N processes on this machine, the devices split among them (try multi-host on a laptop)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    config_arguments(local)
    local.add_argument("--processes", type=int, required=True, help="how many processes")
    local.add_argument(
        "--devices-per-process",
        type=int,
        help="devices each (default: this machine's GPUs, or its JAX CPU devices, split evenly; at least 1)",
    )
    local.add_argument("--run-dir", help="as for lmx train (default runs/<name>)")
    local.add_argument("--extend", action="store_true", help="as for lmx train")
    local.add_argument("--peer-timeout", type=int, default=60, help="seconds before a silent process counts as lost")
    local.set_defaults(func=_cmd_local)

    slurm = kinds.add_parser(
        "slurm",
        help="write (and with --submit, submit) an sbatch script: one process per GPU (or node) through srun",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    config_arguments(slurm)
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus-per-node", type=int, required=True, help="0 for CPU nodes")
    slurm.add_argument("--per", choices=["gpu", "node"], default="gpu", help="one process per GPU, or per node")
    slurm.add_argument("--run-dir", help="on storage every node sees (default runs/<name>)")
    slurm.add_argument(
        "--sbatch-option", action="append", default=[], help="an extra #SBATCH option, e.g. --time=4:00:00"
    )
    slurm.add_argument("--submit", action="store_true", help="run sbatch on the script")
    slurm.set_defaults(func=_cmd_slurm)
