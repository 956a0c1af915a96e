"""Hugging Face interop: transformers checkpoints out of lmx runs (`export_hf`) and into them
(`import_hf`). Needs the ``hf`` extra (safetensors, tokenizers); never torch or transformers."""

from lmx.hf.export import export_hf
from lmx.hf.importer import import_hf

__all__ = ["export_hf", "import_hf"]
