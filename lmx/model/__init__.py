"""The decoder-only transformer, its layers, the reward model built on it, and its FLOPs."""

from lmx.model.reward import PolicyWithValue, RewardModel
from lmx.model.transformer import Block, Transformer, unstack_layers

__all__ = ["Block", "PolicyWithValue", "RewardModel", "Transformer", "unstack_layers"]
