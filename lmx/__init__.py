"""lmx: a JAX research framework for language-model scaling experiments."""

__version__ = "0.1.0"
