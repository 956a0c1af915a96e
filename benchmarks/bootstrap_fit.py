"""Benchmark: 1,000 bootstrap resamples of an approach-3 fit on 100 points (target < 60 s, 2 cores).

The points follow Hoffmann et al. 2022's fitted law with 0.5% noise. Reports the full fit's time,
the bootstrap's time with the default workers (one process per core) and with one, and whether
the 95% intervals contain the truth. Writes benchmarks/results/bootstrap_fit.json (`--out DIR`:
DIR/bootstrap_fit.json).

    python benchmarks/bootstrap_fit.py [--resamples 1000] [--out DIR]
    python benchmarks/bootstrap_fit.py --smoke [--out DIR]   # seconds: 50 resamples

`--smoke`: 50 resamples (`bootstrap` uses its process pool from 50 on: fewer would skip it);
results in `--out` or a new temporary directory, never benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import add_common_arguments, parse_args, write_results

from lmx.scaling.bootstrap import bootstrap
from lmx.scaling.fit import fit_parametric
from lmx.scaling.points import Points

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resamples", type=int, default=1000)
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"resamples": 50})
    rng = np.random.default_rng(0)
    n = 100
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e12), n))
    loss = (TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]) * np.exp(
        rng.normal(0, 0.005, n)
    )
    points = Points(N, D, loss, 6 * N * D, None, tuple(map(str, range(n))), "benchmark")

    start = time.perf_counter()
    fit = fit_parametric(points)
    fit_s = time.perf_counter() - start
    timings = {}
    for workers in (os.cpu_count() or 1, 1):
        start = time.perf_counter()
        result = bootstrap(points, "3", fit, resamples=args.resamples, budget=1e22, workers=workers)
        timings[workers] = time.perf_counter() - start
        print(f"{args.resamples} resamples, {workers} worker(s): {timings[workers]:.1f} s ({result['failed']} failed)")
    contains = {k: result["intervals"][k][0] <= v <= result["intervals"][k][1] for k, v in TRUE.items()}
    print(f"full fit (64 L-BFGS-B starts from the 4,500-point grid): {fit_s:.2f} s; truth inside: {contains}")
    path = write_results(
        "bootstrap_fit",
        {
            "points": n,
            "resamples": args.resamples,
            "cpu_count": os.cpu_count(),
            "full_fit_s": fit_s,
            "bootstrap_s_by_workers": {str(k): v for k, v in timings.items()},
            "failed_resamples": result["failed"],
            "intervals": result["intervals"],
            "truth_inside_interval": contains,
            "target_s": 60,
        },
        args.out,
        args.smoke,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
