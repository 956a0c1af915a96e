"""The RL math (lmx.objectives.rl_losses) against independent NumPy implementations of each paper's
formula, written here with plain loops, on random inputs."""

import numpy as np
import pytest

from lmx.objectives import rl_losses

RNG = np.random.default_rng(0)
B, T = 6, 9


def random_mask(rng: np.random.Generator) -> np.ndarray:
    """Contiguous completions of 1..T tokens, left-aligned (as after the prompt)."""
    lengths = rng.integers(1, T + 1, B)
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_group_advantages_follow_their_papers(estimator):
    rewards = RNG.normal(size=(4, 5)).astype(np.float32)
    rewards[1] = 0.5  # a group whose rewards are all equal: no signal
    expected = np.zeros_like(rewards)
    for p in range(rewards.shape[0]):
        group = [float(r) for r in rewards[p]]
        mean = sum(group) / len(group)
        std = (sum((r - mean) ** 2 for r in group) / len(group)) ** 0.5
        for i, r in enumerate(group):
            if estimator == "grpo":  # DeepSeekMath: (r - mean) / std
                expected[p, i] = (r - mean) / (std + 1e-6)
            elif estimator == "dr_grpo":  # Dr. GRPO: r - mean
                expected[p, i] = r - mean
            else:  # RLOO: r minus the mean of the others
                others = [x for j, x in enumerate(group) if j != i]
                expected[p, i] = r - sum(others) / len(others)
    got = np.asarray(rl_losses.group_advantages(rewards, estimator))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], 0.0, atol=1e-6)


def test_clipped_policy_loss_and_the_clip_fraction():
    logp = np.log(RNG.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    old = (logp + RNG.normal(0, 0.3, (B, T))).astype(np.float32)
    adv = RNG.normal(size=(B, T)).astype(np.float32)
    eps_low, eps_high = 0.2, 0.28  # DAPO's clip-higher
    loss, ratio, clipped = (np.asarray(x) for x in rl_losses.clipped_policy_loss(logp, old, adv, eps_low, eps_high))
    for b in range(B):
        for t in range(T):
            rho = np.exp(float(logp[b, t]) - float(old[b, t]))
            a = float(adv[b, t])
            plain, capped = rho * a, min(max(rho, 1 - eps_low), 1 + eps_high) * a
            assert loss[b, t] == pytest.approx(-min(plain, capped), rel=1e-5, abs=1e-6)
            assert ratio[b, t] == pytest.approx(rho, rel=1e-5)
            # Clipped (no gradient) exactly when the ratio left the range in the advantage's direction.
            assert clipped[b, t] == float((a > 0 and rho > 1 + eps_high) or (a < 0 and rho < 1 - eps_low))


def test_with_the_old_policy_the_ratio_is_one_and_the_loss_the_policy_gradient():
    """mu = 1: the first update's ratio is exactly 1, nothing is clipped, and the loss's gradient
    with respect to log pi is -A (REINFORCE with the group baseline)."""
    import jax

    logp = np.log(RNG.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    adv = RNG.normal(size=(B, T)).astype(np.float32)
    _, ratio, clipped = rl_losses.clipped_policy_loss(logp, logp, adv, 0.2, 0.2)
    assert np.all(np.asarray(ratio) == 1.0) and not np.any(np.asarray(clipped))
    grad = jax.grad(lambda lp: rl_losses.clipped_policy_loss(lp, jax.lax.stop_gradient(lp), adv, 0.2, 0.2)[0].sum())
    np.testing.assert_allclose(np.asarray(grad(logp)), -adv, rtol=1e-6)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_estimators(estimator):
    logp = np.log(RNG.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    ref = np.log(RNG.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    got = np.asarray(rl_losses.kl_estimate(logp, ref, estimator))
    for b in range(B):
        for t in range(T):
            p, q = np.exp(float(logp[b, t])), np.exp(float(ref[b, t]))  # pi, pi_ref of the sampled token
            expected = np.log(p / q) if estimator == "k1" else q / p - np.log(q / p) - 1
            assert got[b, t] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    if estimator == "k3":
        assert np.all(got >= 0)


def test_k3_and_k1_are_unbiased_estimates_of_the_kl():
    """Averaged over samples from pi, both estimate KL(pi || pi_ref) (Schulman 2020)."""
    rng = np.random.default_rng(1)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    tokens = rng.choice(3, size=200_000, p=p)
    exact = float(np.sum(p * np.log(p / q)))
    for estimator in ("k1", "k3"):
        values = np.asarray(rl_losses.kl_estimate(np.log(p[tokens])[None], np.log(q[tokens])[None], estimator))
        assert values.mean() == pytest.approx(exact, rel=0.02), estimator


@pytest.mark.parametrize("how", ["sequence_mean", "token_mean", "constant"])
def test_loss_aggregations(how):
    loss = RNG.normal(size=(B, T)).astype(np.float32)
    mask = random_mask(RNG)
    numerator, denominator = rl_losses.aggregate_sums(loss, mask, how, max_len=T)
    got = float(numerator) / float(denominator)
    sums = [sum(float(loss[b, t]) for t in range(T) if mask[b, t]) for b in range(B)]
    lengths = [int(mask[b].sum()) for b in range(B)]
    if how == "sequence_mean":  # GRPO: 1/G sum_i 1/|o_i| sum_t
        expected = sum(s / n for s, n in zip(sums, lengths, strict=True)) / B
    elif how == "token_mean":  # DAPO: sum_i sum_t / sum_i |o_i|
        expected = sum(sums) / sum(lengths)
    else:  # Dr. GRPO: sum_i sum_t / (G * L_max)
        expected = sum(sums) / (B * T)
    assert got == pytest.approx(expected, rel=1e-5)
    # Split over two "shards": the sums add up to the same global value (pmap-style).
    halves = [rl_losses.aggregate_sums(loss[s], mask[s], how, max_len=T) for s in (slice(0, 3), slice(3, B))]
    assert (sum(float(n) for n, _ in halves) / sum(float(d) for _, d in halves)) == pytest.approx(expected, rel=1e-5)


def test_overlong_penalty_is_dapos_soft_punishment():
    lengths = np.arange(0, 30)
    max_len, cache = 20, 8
    got = np.asarray(rl_losses.overlong_penalty(lengths, max_len, cache))
    for n, value in zip(lengths, got, strict=True):
        if n <= max_len - cache:
            expected = 0.0
        elif n <= max_len:
            expected = ((max_len - cache) - n) / cache
        else:
            expected = -1.0
        assert value == pytest.approx(expected)


def test_gae_equals_a_plain_loop_and_ppo_rewards_put_the_score_last():
    mask = random_mask(RNG)
    kl = RNG.normal(0, 0.1, (B, T)).astype(np.float32)
    score = RNG.normal(size=B).astype(np.float32)
    values = RNG.normal(size=(B, T)).astype(np.float32)
    beta, gamma, lam = 0.05, 0.99, 0.95
    rewards = np.asarray(rl_losses.ppo_token_rewards(score, kl, mask, beta))
    advantages, returns = (np.asarray(x) for x in rl_losses.gae(rewards, values, mask, gamma, lam))
    for b in range(B):
        n = int(mask[b].sum())
        r = [-beta * float(kl[b, t]) for t in range(n)]
        r[-1] += float(score[b])
        np.testing.assert_allclose(rewards[b, :n], r, rtol=1e-5, atol=1e-7)
        assert np.all(rewards[b, n:] == 0)
        expected, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_value = float(values[b, t + 1]) if t + 1 < n else 0.0
            delta = r[t] + gamma * next_value - float(values[b, t])
            running = delta + gamma * lam * running
            expected[t] = running
        np.testing.assert_allclose(advantages[b, :n], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(returns[b, :n], np.array(expected) + values[b, :n], rtol=1e-4, atol=1e-5)
        assert np.all(advantages[b, n:] == 0) and np.all(returns[b, n:] == 0)


def test_whitening_value_loss_and_explained_variance():
    mask = random_mask(RNG)
    x = RNG.normal(3.0, 2.0, (B, T)).astype(np.float32)
    white = np.asarray(rl_losses.whiten(x, mask))
    kept = white[mask > 0]
    assert kept.mean() == pytest.approx(0.0, abs=1e-5) and kept.std() == pytest.approx(1.0, rel=1e-4)
    assert np.all(white[mask == 0] == 0)

    values, old, returns = (RNG.normal(size=(B, T)).astype(np.float32) for _ in range(3))
    got = np.asarray(rl_losses.clipped_value_loss(values, old, returns, 0.2))
    for b in range(B):
        for t in range(T):
            v, vo, ret = float(values[b, t]), float(old[b, t]), float(returns[b, t])
            v_clip = min(max(v, vo - 0.2), vo + 0.2)
            assert got[b, t] == pytest.approx(0.5 * max((v - ret) ** 2, (v_clip - ret) ** 2), rel=1e-5)

    m = mask > 0
    expected = 1 - np.var(returns[m] - values[m]) / np.var(returns[m])
    assert float(rl_losses.explained_variance(values, returns, mask)) == pytest.approx(expected, rel=1e-4)
    assert float(rl_losses.explained_variance(returns, returns, mask)) == pytest.approx(1.0)
