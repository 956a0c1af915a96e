"""The decoder-only transformer, its layers, and the reward model built on it."""

from lmx.model.reward import RewardModel, make_model
from lmx.model.transformer import Block, Transformer, unstack_layers

__all__ = ["Block", "RewardModel", "Transformer", "make_model", "unstack_layers"]
