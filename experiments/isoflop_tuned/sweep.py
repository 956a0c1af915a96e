"""experiments/isoflop_stdlib's IsoFLOP study again, each model size at its own learning rate.

The same 3 budgets x 5 sizes, base config, data and FLOPs definition; only ``optim.learning_rate``
differs, read per model from tuned_lr.json (written by analyse_tune.py from the tune.py sweep).

Run with ``lmx sweep experiments/isoflop_tuned/sweep.py``, then ``lmx fit runs/sweeps/isoflop_tuned
...`` as README.md in this folder gives it.
"""

import dataclasses
import json
from pathlib import Path

from lmx.config import call_python_file
from lmx.errors import ConfigError
from lmx.scaling.sweep import Sweep

HERE = Path(__file__).resolve().parent
STDLIB = HERE.parent / "isoflop_stdlib" / "sweep.py"
TUNED = HERE / "tuned_lr.json"


def tuned_learning_rates() -> dict[str, float]:
    if not TUNED.is_file():
        raise ConfigError(f"{TUNED} is missing: run tune.py's sweep and analyse_tune.py first (README.md)")
    return {model: entry["learning_rate"] for model, entry in json.loads(TUNED.read_text())["models"].items()}


def get_sweep() -> Sweep:
    stdlib: Sweep = call_python_file(STDLIB, "get_sweep", "sweep file")
    lrs = tuned_learning_rates()
    points = []
    for point in stdlib.points:
        model = point.coords["model"]
        if model not in lrs:
            raise ConfigError(f"{TUNED}: no learning rate for model {model}")
        points.append(
            dataclasses.replace(
                point,
                overrides={**point.overrides, "optim.learning_rate": lrs[model]},
                coords={**point.coords, "learning_rate": lrs[model]},
            )
        )
    return dataclasses.replace(stdlib, name="isoflop_tuned", points=points)
