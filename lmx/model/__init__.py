"""The decoder-only transformer, its layers, and the reward model built on it."""

from lmx.model.reward import RewardModel, model_class
from lmx.model.transformer import Block, Transformer, unstack_layers

__all__ = ["Block", "RewardModel", "Transformer", "model_class", "unstack_layers"]
