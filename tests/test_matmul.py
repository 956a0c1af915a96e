"""lmx.model.matmul: the same values and gradients as a plain product, with the weight gradient's
operands ordered so that the smaller one is transposed."""

import contextlib
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from lmx.model import matmul as matmul_module
from lmx.model.matmul import dense_dot_general, dense_matmul, ordered_weight_gradient


def operands(k: int, n: int):
    rng = np.random.default_rng(k * 100 + n)
    x = jnp.asarray(rng.normal(size=(2, 3, k)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, n)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 3, n)), jnp.float32)
    return x, w, g


@pytest.mark.parametrize("k, n", [(4, 7), (7, 4), (5, 5)])
def test_values_and_gradients_equal_the_plain_product_in_float64(k, n):
    x, w, g = operands(k, n)
    y, vjp = jax.vjp(dense_matmul, x, w)
    dx, dw = vjp(g)
    x64, w64, g64 = (np.asarray(a, np.float64) for a in (x, w, g))
    np.testing.assert_allclose(y, x64 @ w64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, g64 @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, np.einsum("abk,abn->kn", x64, g64), rtol=1e-5, atol=1e-5)
    assert dx.shape == x.shape and dw.shape == w.shape


def _weight_gradient_dot_operands(k: int, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    x, w, _ = operands(k, n)
    jaxpr = jax.make_jaxpr(jax.grad(lambda w: jnp.sum(dense_matmul(x, w) ** 2)))(w)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    # The forward product, then the weight gradient (dx is not needed for grad with respect to w).
    last = dots[-1]
    return tuple(v.aval.shape for v in last.invars)


def test_the_weight_gradient_puts_the_smaller_operand_first():
    # Widening (K < N): the activations x [.., K] lead, so XLA transposes them, not g [.., N].
    assert _weight_gradient_dot_operands(4, 7) == ((2, 3, 4), (2, 3, 7))
    # Narrowing (K > N): the cotangent leads, as in JAX's own transpose rule.
    assert _weight_gradient_dot_operands(7, 4) == ((2, 3, 4), (2, 3, 7))


def test_gradients_agree_under_remat_policies():
    x, w, g = operands(4, 7)

    def loss(w, x, policy):
        f = jax.checkpoint(lambda x, w: jnp.tanh(dense_matmul(x, w)), policy=policy)
        return jnp.sum(f(x, w) * g)

    plain = jax.grad(lambda w: jnp.sum(jnp.tanh(jnp.einsum("abk,kn->abn", x, w)) * g))(w)
    for policy in (None, jax.checkpoint_policies.checkpoint_dots, jax.checkpoint_policies.nothing_saveable):
        np.testing.assert_allclose(jax.jit(jax.grad(loss), static_argnums=2)(w, x, policy), plain, rtol=1e-5, atol=1e-6)


def test_dense_layers_use_it_and_other_contractions_fall_back():
    x, w, _ = operands(4, 7)
    dense = nn.Dense(7, use_bias=False, dot_general=dense_dot_general)
    params = {"params": {"kernel": w}}
    np.testing.assert_allclose(dense.apply(params, x), jnp.einsum("abk,kn->abn", x, w), rtol=1e-6)
    jaxpr = jax.make_jaxpr(lambda x: dense.apply(params, x))(x)
    assert any(e.primitive.name == "custom_vjp_call" for e in jaxpr.jaxpr.eqns)
    # A DenseGeneral-style contraction (two input axes, 3-D kernel) is left to lax.dot_general.
    w3 = jnp.ones((3, 4, 5))
    dims = (((1, 2), (0, 1)), ((), ()))
    np.testing.assert_allclose(dense_dot_general(x, w3, dims), jax.lax.dot_general(x, w3, dims), rtol=1e-6)
    np.testing.assert_allclose(
        dense_dot_general(x, w, (((2,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST),
        jnp.einsum("abk,kn->abn", x, w),
        rtol=1e-6,
    )


def test_only_the_cpu_backend_takes_it_and_save_dots_sees_the_plain_product(monkeypatch):
    """Elsewhere than CPU dense layers compute the plain product, which remat's save_dots policy
    keeps for the backward; on CPU `dense_matmul` hides it from the policy (lmx.scaling.memory
    plans both)."""
    assert ordered_weight_gradient("cpu") and not ordered_weight_gradient("gpu") and not ordered_weight_gradient("tpu")
    x, w, _ = operands(4, 7)
    dense = nn.Dense(7, use_bias=False, dot_general=dense_dot_general)
    policy = jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims

    def saved(w) -> str:  # the residuals a save_dots remat of the layer keeps, as JAX lists them
        f = jax.checkpoint(lambda w, x: jnp.tanh(dense.apply({"params": {"kernel": w}}, x)), policy=policy)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_saved_residuals(f, w, x)
        return out.getvalue()

    assert "f32[2,3,7] output of dot_general" not in saved(w)  # CPU: the product is recomputed
    monkeypatch.setattr(matmul_module, "ordered_weight_gradient", lambda platform=None: False)
    assert "f32[2,3,7] output of dot_general" in saved(w)  # elsewhere: saved
    jaxpr = jax.make_jaxpr(lambda x: dense.apply({"params": {"kernel": w}}, x))(x)
    assert not any(e.primitive.name == "custom_vjp_call" for e in jaxpr.jaxpr.eqns)
    np.testing.assert_allclose(dense.apply({"params": {"kernel": w}}, x), jnp.einsum("abk,kn->abn", x, w), rtol=1e-6)
