"""Each preference loss against its paper's formula, written independently in NumPy here."""

import jax.numpy as jnp
import numpy as np
import pytest

from lmx.objectives.preference_losses import (
    PREFERENCE_LOSSES,
    PreferenceHyper,
    SequenceLogps,
    bradley_terry,
)

RNG = np.random.default_rng(0)
B = 64
CHOSEN, REJECTED = -RNG.uniform(1, 40, B), -RNG.uniform(1, 40, B)
REF_CHOSEN, REF_REJECTED = -RNG.uniform(1, 40, B), -RNG.uniform(1, 40, B)
N_CHOSEN, N_REJECTED = RNG.integers(1, 30, B).astype(float), RNG.integers(1, 30, B).astype(float)
LOGPS = SequenceLogps(
    *(jnp.asarray(x, jnp.float32) for x in (CHOSEN, REJECTED, N_CHOSEN, N_REJECTED, REF_CHOSEN, REF_REJECTED))
)


def log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def expected(name, beta, smoothing=0.0, gamma=0.5):
    rho_w, rho_l = CHOSEN - REF_CHOSEN, REJECTED - REF_REJECTED
    if name == "dpo":  # Rafailov et al. 2023; conservative: Mitchell 2023
        h = beta * (rho_w - rho_l)
        return -(1 - smoothing) * log_sigmoid(h) - smoothing * log_sigmoid(-h)
    if name == "ipo":  # Azar et al. 2023: (h - 1/(2 tau))^2
        return (rho_w - rho_l - 1 / (2 * beta)) ** 2
    if name == "simpo":  # Meng et al. 2024
        return -log_sigmoid(beta / N_CHOSEN * CHOSEN - beta / N_REJECTED * REJECTED - gamma)
    if name == "orpo":  # Hong et al. 2024: L_SFT + lambda L_OR
        p_w, p_l = np.exp(CHOSEN / N_CHOSEN), np.exp(REJECTED / N_REJECTED)
        odds_w, odds_l = p_w / (1 - p_w), p_l / (1 - p_l)
        return -CHOSEN / N_CHOSEN - beta * log_sigmoid(np.log(odds_w / odds_l))
    raise KeyError(name)


@pytest.mark.parametrize(
    "name, hyper",
    [
        ("dpo", PreferenceHyper(beta=0.1)),
        ("dpo", PreferenceHyper(beta=0.5, label_smoothing=0.2)),  # conservative DPO
        ("ipo", PreferenceHyper(beta=0.1)),
        ("simpo", PreferenceHyper(beta=2.0, gamma=0.5)),
        ("orpo", PreferenceHyper(beta=0.1)),
    ],
)
def test_loss_equals_the_papers_formula(name, hyper):
    loss, _, _ = PREFERENCE_LOSSES[name](LOGPS, hyper)
    want = expected(name, hyper.beta, hyper.label_smoothing, hyper.gamma)
    np.testing.assert_allclose(np.asarray(loss), want, rtol=2e-5, atol=1e-5)


def test_dpo_with_policy_equal_to_reference_is_log_2_with_zero_rewards():
    same = SequenceLogps(
        LOGPS.chosen, LOGPS.rejected, LOGPS.chosen_tokens, LOGPS.rejected_tokens, LOGPS.chosen, LOGPS.rejected
    )
    loss, reward_w, reward_l = PREFERENCE_LOSSES["dpo"](same, PreferenceHyper(beta=0.1))
    np.testing.assert_allclose(np.asarray(loss), np.log(2), rtol=1e-6)
    assert not np.any(np.asarray(reward_w)) and not np.any(np.asarray(reward_l))


def test_reference_losses_refuse_missing_reference():
    no_ref = SequenceLogps(LOGPS.chosen, LOGPS.rejected, LOGPS.chosen_tokens, LOGPS.rejected_tokens)
    with pytest.raises(ValueError, match="reference"):
        PREFERENCE_LOSSES["dpo"](no_ref, PreferenceHyper())
    loss, _, _ = PREFERENCE_LOSSES["simpo"](no_ref, PreferenceHyper())  # reference-free
    assert np.all(np.isfinite(np.asarray(loss)))


def test_bradley_terry():
    chosen, rejected = RNG.normal(size=8), RNG.normal(size=8)
    np.testing.assert_allclose(
        np.asarray(bradley_terry(jnp.asarray(chosen), jnp.asarray(rejected))),
        -log_sigmoid(chosen - rejected),
        rtol=1e-5,
    )
