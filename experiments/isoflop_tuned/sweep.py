"""experiments/isoflop_stdlib's IsoFLOP study again, each model size at its own learning rates.

The same budgets, sizes, base config, data and FLOPs definition; only ``optim.learning_rate``
differs. At 1e12 FLOPs tune.py already ran every size at six rates (2^-10 to 2^-5). At 3e12 and
1e13 this sweep runs each size at its tuned rate r (tuned_lr.json, the 1e12 optimum) and at 2r,
since tune.py's horizon probe found the optimum rising with the number of steps; isoflop_stdlib's
run at 3e-3 is a third rate. analyse.py keeps each (size, budget)'s lowest loss over its rates.

Run with ``lmx sweep experiments/isoflop_tuned/sweep.py`` (20 runs), then analyse.py and ``lmx fit``
as README.md in this folder gives them.
"""

import json
from pathlib import Path

from lmx.config import call_python_file
from lmx.errors import ConfigError
from lmx.scaling.sweep import Sweep, cross, grid

HERE = Path(__file__).resolve().parent
STDLIB = HERE.parent / "isoflop_stdlib" / "sweep.py"
TUNED = HERE / "tuned_lr.json"
TUNE_BUDGET = 1e12
RATE_MULTIPLIERS = (1.0, 2.0)


def tuned_learning_rates() -> dict[str, float]:
    if not TUNED.is_file():
        raise ConfigError(f"{TUNED} is missing: run tune.py's sweep and analyse_tune.py first (README.md)")
    return {model: entry["learning_rate"] for model, entry in json.loads(TUNED.read_text())["models"].items()}


def get_sweep() -> Sweep:
    stdlib: Sweep = call_python_file(STDLIB, "get_sweep", "sweep file")
    lrs = tuned_learning_rates()
    points = []
    for point in stdlib.points:
        if point.budget == TUNE_BUDGET:
            continue
        model = point.coords["model"]
        if model not in lrs:
            raise ConfigError(f"{TUNED}: no learning rate for model {model}")
        rates = tuple(m * lrs[model] for m in RATE_MULTIPLIERS)
        points += cross([point], grid({"optim.learning_rate": rates}, {"optim.learning_rate": "lr"}))
    return Sweep(
        name="isoflop_tuned",
        base=stdlib.base,
        points=points,
        flops=stdlib.flops,
        warmup_fraction=stdlib.warmup_fraction,
    )
