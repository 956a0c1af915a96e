"""Learning rate per model size for the IsoFLOP study: experiments/isoflop_stdlib's five sizes at
its smallest budget (1e12 FLOPs), each at six learning rates a factor of two apart, 2^-10 to 2^-5.

One horizon probe beside them: L2-d64 at 3e12 FLOPs (3x the steps) at 2^-9, 2^-8 and 2^-7, to see
whether an optimum found at 1e12 still holds for longer runs.

Run with ``lmx sweep experiments/isoflop_tuned/tune.py``, then ``python
experiments/isoflop_tuned/analyse_tune.py runs/sweeps/isoflop_tune``, which writes tuned_lr.json
for sweep.py. See README.md in this folder.
"""

from pathlib import Path

from lmx.config import call_python_file
from lmx.scaling.sweep import Sweep, cross, grid

STDLIB = Path(__file__).resolve().parent.parent / "isoflop_stdlib" / "sweep.py"
TUNE_BUDGET = 1e12
LEARNING_RATES = tuple(2.0**k for k in range(-10, -4))  # 9.8e-4 .. 3.1e-2
PROBE_BUDGET, PROBE_MODEL = 3e12, "L2-d64"
PROBE_LEARNING_RATES = (2.0**-9, 2.0**-8, 2.0**-7)


def _lr_grid(values: tuple[float, ...]) -> list:
    return grid({"optim.learning_rate": values}, {"optim.learning_rate": "lr"})


def get_sweep() -> Sweep:
    stdlib: Sweep = call_python_file(STDLIB, "get_sweep", "sweep file")
    at_budget = [p for p in stdlib.points if p.budget == TUNE_BUDGET]
    probe = [p for p in stdlib.points if p.budget == PROBE_BUDGET and p.coords["model"] == PROBE_MODEL]
    return Sweep(
        name="isoflop_tune",
        base=stdlib.base,
        points=cross(at_budget, _lr_grid(LEARNING_RATES)) + cross(probe, _lr_grid(PROBE_LEARNING_RATES)),
        flops=stdlib.flops,
        warmup_fraction=stdlib.warmup_fraction,
    )
