"""Parameter counts and training FLOPs per token, from the model config alone.

Five FLOPs definitions (`FLOPS_DEFINITIONS`), all training FLOPs per token, backward = 2 x forward:

- ``executed`` (the default, `DEFAULT_FLOPS_DEFINITION`): the matrix products lmx's step executes.
  Every layer's projections, MLP and attention (logits and the weighted sum over values, the full
  L x L product, as the ``reference`` and ``chunked`` implementations compute it; a causal kernel
  that skips masked blocks does about half of that part), and the final logits; nothing for the
  embedding lookup (a gather, and a scatter-add in the backward), the softmax, norms or activations,
  and no recomputation under remat. It is the numerator of MFU (the training loop, `lmx plan`'s step
  time, the benchmarks), and the sweeps' default: a budget in these FLOPs is a budget in device time
  at a given MFU, the time estimates of a dry run divide like by like, and it keeps both terms the
  simpler counts drop for small models, the output projection (Porian et al. 2024 found leaving it
  out is one cause of the Kaplan/Hoffmann disagreement) and attention over the context (large at
  small ``d_model`` and long sequences), without inventing a matmul for the lookup.
- ``chinchilla``: Hoffmann et al. 2022 as their Table A4 computes it: appendix F's per-layer terms
  (QKV projections, attention logits, softmax, attention over values, output projection, MLP), with
  no embedding and no final-logit term. The appendix's text lists both vocabulary terms
  (``2 x seq x vocab x d_model`` each) in the total, but the table's ratios (theirs / 6ND, N the
  total parameter count with embeddings, vocabulary 32,000, sequence 2,048) come out only without
  them: for the 73M row the text's count gives 1.60 and the layers plus final logits 1.32, against
  a published 1.03; the layers alone give 0.99 to 1.10 and match all six rows within 1% (N from
  Table A9, which lists the same shapes' sizes to the million; Table A4 rounds 1,143M to "1.1B",
  which alone would put that row 4% off). Others reproducing the table found the same (nanoGPT's
  scaling_laws notebook). Which of the two counts set the paper's IsoFLOP budgets is not stated.
- ``6n`` (Kaplan et al. 2020): 6 x the non-embedding parameter count.
- ``porian`` (Porian et al. 2024, "Resolving discrepancies in compute-optimal scaling"):
  6 x (non-embedding + unembedding) parameters. The output projection is a real matmul on every
  token; the input embedding is a lookup and stays out.
- ``detailed``: appendix F's text term by term, the embedding lookup counted as a ``2 x vocab x
  d_model`` matmul per token plus the final logits. It overstates a small model's compute (1.60 x
  6ND on Table A4's 73M row, where the table has 1.03) and is the default nowhere; it stays
  readable because sweeps recorded before ``executed`` existed carry ``flops_definition="detailed"``.

Adaptations to this architecture, exact for it, in every term-by-term count: K and V projections use
``n_kv_heads`` (GQA), and a SwiGLU MLP has three matrices instead of two. Like the appendix,
attention counts the full L x L matrix (no causal halving).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from lmx.config import Config, ModelConfig

FlopsDefinition = Literal["executed", "chinchilla", "6n", "porian", "detailed"]
DEFAULT_FLOPS_DEFINITION: FlopsDefinition = "executed"


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # input embedding, plus the output embedding when untied
    non_embedding: int
    unembedding: int  # the output projection's weights (shared with the input when tied)

    def by_definition(self, definition: FlopsDefinition) -> int:
        """The parameter count N that goes with a FLOPs definition (C = 6 N D for ``6n`` and ``porian``).

        ``executed``: the parameters its matmuls multiply by (non-embedding + unembedding, as
        ``porian``); ``chinchilla`` and ``detailed``: all of them, as Hoffmann et al. count N.
        """
        if definition == "6n":
            return self.non_embedding
        if definition in ("porian", "executed"):
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


def flops_per_token_executed(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token that the step executes as matrix products (``executed``; MFU's numerator).

    Appendix F's terms without the embedding lookup (a gather, not a matmul) and the softmax.
    """
    f = forward_flops(cfg, seq_len)
    return 3 * (cfg.n_layers * (f.per_layer - f.softmax) + f.final_logits) / seq_len


def flops_per_token_chinchilla(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token as Hoffmann et al. 2022's Table A4 computes them (``chinchilla``):
    appendix F's per-layer terms only, softmax included, no embedding and no final logits."""
    return 3 * cfg.n_layers * forward_flops(cfg, seq_len).per_layer / seq_len


def flops_per_token_detailed(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token as appendix F's text writes them (``detailed``, kept for recorded sweeps):
    forward + backward (= 2 x forward), the embedding lookup counted as a matmul. Overstates."""
    return 3 * forward_flops(cfg, seq_len).total / seq_len


def flops_per_token_6n(cfg: ModelConfig) -> float:
    """Training FLOPs per token as 6 x non-embedding parameters (Kaplan et al. 2020)."""
    return 6 * param_counts(cfg).non_embedding


def flops_per_token_porian(cfg: ModelConfig) -> float:
    """Training FLOPs per token as 6 x (non-embedding + unembedding) parameters (Porian et al. 2024)."""
    counts = param_counts(cfg)
    return 6 * (counts.non_embedding + counts.unembedding)


FLOPS_DEFINITIONS: dict[str, Callable[[ModelConfig, int], float]] = {
    "executed": flops_per_token_executed,
    "chinchilla": flops_per_token_chinchilla,
    "6n": lambda cfg, seq_len: flops_per_token_6n(cfg),
    "porian": lambda cfg, seq_len: flops_per_token_porian(cfg),
    "detailed": flops_per_token_detailed,
}


def flops_per_token(cfg: ModelConfig, seq_len: int, definition: FlopsDefinition = DEFAULT_FLOPS_DEFINITION) -> float:
    """Training FLOPs per token under `definition` (one of `FLOPS_DEFINITIONS`)."""
    if definition not in FLOPS_DEFINITIONS:
        raise ValueError(f"unknown FLOPs definition {definition!r}; expected one of {sorted(FLOPS_DEFINITIONS)}")
    return FLOPS_DEFINITIONS[definition](cfg, seq_len)


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimizer step trains on (pretraining: every position of the global batch)."""
    return cfg.train.batch_size * cfg.data.seq_len


def training_flops(
    cfg: Config, definition: FlopsDefinition = DEFAULT_FLOPS_DEFINITION, steps: int | None = None
) -> float:
    """Training FLOPs of a pretraining run of `cfg` (``train.steps`` steps unless `steps` is given)."""
    steps = cfg.train.steps if steps is None else steps
    return flops_per_token(cfg.model, cfg.data.seq_len, definition) * tokens_per_step(cfg) * steps


def model_flops_utilization(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float | None:
    """MFU: model FLOP/s achieved over the hardware's peak (None when the peak is unknown)."""
    if peak_flops_per_s <= 0:
        return None
    return tokens_per_s * flops_per_token / peak_flops_per_s


_NOTES = {
    "executed": "default; MFU",
    "chinchilla": "Table A4",
    "6n": "Kaplan",
    "porian": "Porian",
    "detailed": "appendix F text; overstates",
}


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
        ("forward FLOPs per sequence, appendix F's terms:", ""),
    ]
    for name in ("embeddings", "qkv", "attention_logits", "softmax", "attention_values", "attention_output", "mlp"):
        per_layer = "" if name == "embeddings" else f" (x {cfg.model.n_layers} layers)"
        rows.append((f"  {name}{per_layer}", f"{getattr(f, name):.4g}"))
    rows.append(("  final_logits", f"{f.final_logits:.4g}"))
    rows.append(("training FLOPs per token (run total):", ""))
    for definition in FLOPS_DEFINITIONS:
        per_token = flops_per_token(cfg.model, L, definition)
        run = per_token * tokens * cfg.train.steps
        rows.append((f"  {definition}", f"{per_token:.4g} (run: {run:.4g}; {_NOTES[definition]})"))
    return rows
