"""Parameter counts and training FLOPs per token, from the model config alone.

Two FLOPs definitions:
- ``6N`` (Kaplan et al. 2020): 6 x the non-embedding parameter count per token.
- ``detailed``: Hoffmann et al. 2022 (Chinchilla), appendix F, term by term: embeddings, QKV
  projections, attention logits, softmax, attention over values, output projection, MLP, final
  logits; backward = 2 x forward. Two adaptations to this architecture, both exact for it: K and V
  projections use ``n_kv_heads`` (GQA), and a SwiGLU MLP has three matrices instead of two.
  Like the appendix, attention counts the full L x L matrix (no causal halving).
"""

from __future__ import annotations

import dataclasses

from lmx.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # input embedding, plus the output embedding when untied
    non_embedding: int


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts of `lmx.model.Transformer` for `cfg`."""
    d, kv = cfg.d_model, cfg.n_kv_heads * cfg.head_dim
    attention = d * d + 2 * d * kv + d * d  # query, key, value, out
    if cfg.qk_norm:
        attention += 2 * cfg.head_dim
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.d_ff
    per_layer = attention + mlp + 2 * d  # two norm scales
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    non_embedding = cfg.n_layers * per_layer + d  # + final norm
    return ParamCounts(total=embedding + non_embedding, embedding=embedding, non_embedding=non_embedding)


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


def matmul_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token that the compiled step actually performs as matrix products.

    The detailed count without the embedding lookup (a gather, not a matmul) and the softmax;
    this is the numerator of model FLOP/s utilisation.
    """
    f = forward_flops(cfg, seq_len)
    return 3 * (f.total - f.embeddings - cfg.n_layers * f.softmax) / seq_len
