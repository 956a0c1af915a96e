"""Data: corpora, SentencePiece tokenizers, token files and Grain pipelines."""
