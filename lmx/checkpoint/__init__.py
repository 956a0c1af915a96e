"""Checkpoints on disk: a run's Orbax checkpoints (`manager`), and parameters read from another
run's checkpoint (`init_from`: post-training starts, inference)."""

from lmx.checkpoint.manager import Checkpoints, saved_steps

__all__ = ["Checkpoints", "saved_steps"]
