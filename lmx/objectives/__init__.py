"""Objectives: what a run optimises, one module each, found by ``objective.kind`` in a registry.

Each objective module holds its config section (a dataclass of its own fields), its pure loss, how
it reads its data and how it evaluates, and registers an `Objective` (`lmx.objectives.base`). The
trainer and the evaluators know only that record. Importing this package registers the built-in
objectives; a user registers their own with `register` from their own module (docs/examples/).
"""

from lmx.objectives import preference, pretrain, reward_model, rl, sft
from lmx.objectives.base import LossFn, Objective, Task
from lmx.objectives.registry import get_objective, objective_kinds, objective_of, register

__all__ = [
    "LossFn",
    "Objective",
    "Task",
    "get_objective",
    "objective_kinds",
    "objective_of",
    "preference",
    "pretrain",
    "register",
    "reward_model",
    "rl",
    "sft",
]
