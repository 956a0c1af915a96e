"""The decoder-only transformer and its layers."""

from lmx.model.transformer import Block, Transformer

__all__ = ["Block", "Transformer"]
