"""Parameter counts and training FLOPs per token, from the model config alone.

Three FLOPs definitions (`FLOPS_DEFINITIONS`), all training FLOPs per token:
- ``6n`` (Kaplan et al. 2020): 6 x the non-embedding parameter count.
- ``porian`` (Porian et al. 2024, "Resolving discrepancies in compute-optimal scaling"):
  6 x (non-embedding + unembedding) parameters. The output projection is a real matmul on every
  token, and leaving it out is one of the causes they found of the Kaplan/Hoffmann disagreement;
  the input embedding is a lookup and stays out.
- ``detailed``: Hoffmann et al. 2022 (Chinchilla), appendix F, term by term: embeddings, QKV
  projections, attention logits, softmax, attention over values, output projection, MLP, final
  logits; backward = 2 x forward. Two adaptations to this architecture, both exact for it: K and V
  projections use ``n_kv_heads`` (GQA), and a SwiGLU MLP has three matrices instead of two.
  Like the appendix, attention counts the full L x L matrix (no causal halving).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from lmx.config import Config, ModelConfig

FlopsDefinition = Literal["6n", "porian", "detailed"]


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # input embedding, plus the output embedding when untied
    non_embedding: int
    unembedding: int  # the output projection's weights (shared with the input when tied)

    def by_definition(self, definition: FlopsDefinition) -> int:
        """The parameter count N that goes with a FLOPs definition (C = 6 N D for the first two)."""
        if definition == "6n":
            return self.non_embedding
        if definition == "porian":
            return self.non_embedding + self.unembedding
        return self.total


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts of `lmx.model.Transformer` for `cfg`."""
    d, q, kv = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = 2 * d * q + 2 * d * kv  # query and out, key and value
    if cfg.qk_norm:
        attention += 2 * cfg.head_dim
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.d_ff
    per_layer = attention + mlp + 2 * d  # two norm scales
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    non_embedding = cfg.n_layers * per_layer + d  # + final norm
    return ParamCounts(
        total=embedding + non_embedding,
        embedding=embedding,
        non_embedding=non_embedding,
        unembedding=cfg.vocab_size * d,
    )


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs of one sequence, by term (Hoffmann et al. 2022, appendix F)."""

    embeddings: float
    qkv: float
    attention_logits: float
    softmax: float
    attention_values: float
    attention_output: float
    mlp: float
    final_logits: float
    n_layers: int

    @property
    def per_layer(self) -> float:
        return (
            self.qkv + self.attention_logits + self.softmax + self.attention_values + self.attention_output + self.mlp
        )

    @property
    def total(self) -> float:
        return self.embeddings + self.n_layers * self.per_layer + self.final_logits


def forward_flops(cfg: ModelConfig, seq_len: int) -> ForwardFlops:
    L, d, v = seq_len, cfg.d_model, cfg.vocab_size
    q_width, kv_width = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    mlp_matrices = 3 if cfg.mlp == "swiglu" else 2
    return ForwardFlops(
        embeddings=2 * L * v * d,
        qkv=2 * L * d * (q_width + 2 * kv_width),
        attention_logits=2 * L * L * q_width,
        softmax=3 * cfg.n_heads * L * L,
        attention_values=2 * L * L * q_width,
        attention_output=2 * L * q_width * d,
        mlp=2 * L * mlp_matrices * d * cfg.d_ff,
        final_logits=2 * L * d * v,
        n_layers=cfg.n_layers,
    )


def flops_per_token_detailed(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, appendix F: forward + backward (= 2 x forward)."""
    return 3 * forward_flops(cfg, seq_len).total / seq_len


def flops_per_token_6n(cfg: ModelConfig) -> float:
    """Training FLOPs per token as 6 x non-embedding parameters (Kaplan et al. 2020)."""
    return 6 * param_counts(cfg).non_embedding


def flops_per_token_porian(cfg: ModelConfig) -> float:
    """Training FLOPs per token as 6 x (non-embedding + unembedding) parameters (Porian et al. 2024)."""
    counts = param_counts(cfg)
    return 6 * (counts.non_embedding + counts.unembedding)


FLOPS_DEFINITIONS: dict[str, Callable[[ModelConfig, int], float]] = {
    "6n": lambda cfg, seq_len: flops_per_token_6n(cfg),
    "porian": lambda cfg, seq_len: flops_per_token_porian(cfg),
    "detailed": flops_per_token_detailed,
}


def flops_per_token(cfg: ModelConfig, seq_len: int, definition: FlopsDefinition = "detailed") -> float:
    """Training FLOPs per token under `definition` (one of `FLOPS_DEFINITIONS`)."""
    if definition not in FLOPS_DEFINITIONS:
        raise ValueError(f"unknown FLOPs definition {definition!r}; expected one of {sorted(FLOPS_DEFINITIONS)}")
    return FLOPS_DEFINITIONS[definition](cfg, seq_len)


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimizer step trains on (pretraining: every position of the global batch)."""
    return cfg.train.batch_size * cfg.data.seq_len


def training_flops(cfg: Config, definition: FlopsDefinition = "detailed", steps: int | None = None) -> float:
    """Training FLOPs of a pretraining run of `cfg` (``train.steps`` steps unless `steps` is given)."""
    steps = cfg.train.steps if steps is None else steps
    return flops_per_token(cfg.model, cfg.data.seq_len, definition) * tokens_per_step(cfg) * steps


def model_flops_utilization(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float | None:
    """MFU: model FLOP/s achieved over the hardware's peak (None when the peak is unknown)."""
    if peak_flops_per_s <= 0:
        return None
    return tokens_per_s * flops_per_token / peak_flops_per_s


def flops_table(cfg: Config) -> list[tuple[str, str]]:
    """(quantity, value) rows describing one config's size and cost: what ``lmx flops`` prints."""
    counts = param_counts(cfg.model)
    L = cfg.data.seq_len
    f = forward_flops(cfg.model, L)
    tokens = tokens_per_step(cfg)
    rows = [
        ("parameters (total)", f"{counts.total:,}"),
        ("  embedding", f"{counts.embedding:,}"),
        ("  non-embedding", f"{counts.non_embedding:,}"),
        ("  unembedding (output projection)", f"{counts.unembedding:,}"),
        ("sequence length", f"{L:,}"),
        ("tokens per step", f"{tokens:,}"),
        ("steps", f"{cfg.train.steps:,}"),
        ("training tokens", f"{tokens * cfg.train.steps:,}"),
        ("tokens per parameter (total)", f"{tokens * cfg.train.steps / counts.total:.2f}"),
        ("forward FLOPs per sequence, appendix F:", ""),
    ]
    for name in ("embeddings", "qkv", "attention_logits", "softmax", "attention_values", "attention_output", "mlp"):
        per_layer = "" if name == "embeddings" else f" (x {cfg.model.n_layers} layers)"
        rows.append((f"  {name}{per_layer}", f"{getattr(f, name):.4g}"))
    rows.append(("  final_logits", f"{f.final_logits:.4g}"))
    rows.append(("training FLOPs per token:", ""))
    for definition in FLOPS_DEFINITIONS:
        per_token = flops_per_token(cfg.model, L, definition)
        rows.append((f"  {definition}", f"{per_token:.4g} (run: {per_token * tokens * cfg.train.steps:.4g})"))
    return rows


def matmul_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token that the compiled step actually performs as matrix products.

    The detailed count without the embedding lookup (a gather, not a matmul) and the softmax;
    this is the numerator of model FLOP/s utilisation.
    """
    f = forward_flops(cfg, seq_len)
    return 3 * (f.total - f.embeddings - cfg.n_layers * f.softmax) / seq_len
