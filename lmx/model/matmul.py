"""A dense matmul whose weight gradient transposes the smaller of its two operands.

The weight gradient of ``y = x @ w`` is ``x^T @ g``, a dot that contracts the token dimensions of
the activations ``x [..., K]`` and the output cotangent ``g [..., N]``. JAX's transpose rule always
makes the cotangent the dot's left operand, and XLA's CPU backend canonicalises a dot so that its left
operand has the contracting dimensions last, which it does by physically transposing that operand.
When the layer widens (``N > K``: the SwiGLU gate and up projections, the vocabulary logits), that
copies the larger tensor, e.g. the ``[tokens, vocab]`` logits gradient. Here the weight gradient puts
the smaller operand on the left instead; the result is the same dot, and the step of
``configs/small.py`` on CPU ran faster with it (BENCHMARKS.md).

That was measured on CPU only, so dense layers take it on the CPU backend only (`matmul`); on GPU
and TPU they compute the plain product, whose layout those compilers choose themselves, and which
remat's ``save_dots`` policy sees as a dot.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.custom_vjp
def dense_matmul(x: Array, w_KxN: Array) -> Array:
    """``x [..., K] @ w [K, N] -> [..., N]`` (the gradient is that of the plain product)."""
    return jnp.einsum("...k,kn->...n", x, w_KxN)


def _forward(x: Array, w_KxN: Array) -> tuple[Array, tuple[Array, Array]]:
    return dense_matmul(x, w_KxN), (x, w_KxN)


def _backward(residuals: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, w_KxN = residuals
    dx = jnp.einsum("...n,kn->...k", g, w_KxN)
    if w_KxN.shape[0] <= w_KxN.shape[1]:  # x is the smaller operand: transpose it
        dw_KxN = jnp.einsum("...k,...n->kn", x, g)
    else:
        dw_KxN = jnp.einsum("...n,...k->nk", g, x).T
    return dx.astype(x.dtype), dw_KxN.astype(w_KxN.dtype)


dense_matmul.defvjp(_forward, _backward)


def ordered_weight_gradient(platform: str | None = None) -> bool:
    """Whether dense layers use `dense_matmul` on `platform` (default: JAX's default backend): on
    CPU only, where its operand order was measured to help."""
    return (platform or jax.default_backend()) == "cpu"


def matmul(x: Array, w_KxN: Array) -> Array:
    """``x [..., K] @ w [K, N]`` as lmx's dense layers compute it: `dense_matmul` on CPU, the plain
    product elsewhere (decided when traced)."""
    if ordered_weight_gradient():
        return dense_matmul(x, w_KxN)
    return jnp.einsum("...k,kn->...n", x, w_KxN)


def dense_dot_general(
    lhs: Array,
    rhs: Array,
    dimension_numbers: tuple[tuple[Sequence[int], Sequence[int]], tuple[Sequence[int], Sequence[int]]],
    precision: jax.lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
) -> Array:
    """``lax.dot_general`` for ``nn.Dense(dot_general=...)``: Dense's own contraction (the input's
    last axis with a 2-D kernel's first) goes through `matmul`; anything else, or a requested
    precision or result type, goes to ``lax.dot_general`` unchanged."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    is_dense = (
        rhs.ndim == 2
        and tuple(lhs_contract) == (lhs.ndim - 1,)
        and tuple(rhs_contract) == (0,)
        and not lhs_batch
        and not rhs_batch
    )
    if is_dense and precision is None and preferred_element_type is None:
        return matmul(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
