"""DPPO helpers: the hand-checked vectors of specs/dppo.md and the estimates' properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.objectives import dppo


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# (mu, pi, A, expected mask) with delta_low = 0.10, delta_high = 0.20.
BINARY_TV_TABLE = [
    (0.5, 0.65, +1, 1),
    (0.5, 0.75, +1, 0),
    (0.5, 0.35, +1, 1),
    (0.5, 0.35, -1, 0),
    (0.5, 0.45, -1, 1),
    (0.5, 0.90, -1, 1),
    (1e-4, 1e-2, +1, 1),
    (0.99, 0.80, -1, 0),
]
# (mu, pi, A, D, expected mask) with delta = 0.05.
BINARY_KL_TABLE = [
    (0.5, 0.65, +1, 0.0471553, 1),
    (0.5, 0.70, +1, 0.0871767, 0),
    (0.99, 0.80, -1, 0.1810050, 0),
    (0.9, 0.97, +1, 0.0529861, 0),
]
MU6 = [0.50, 0.20, 0.15, 0.10, 0.04, 0.01]
PI6 = [0.40, 0.30, 0.12, 0.10, 0.06, 0.02]
# sampled token -> (TopK-KL, TopK-TV) with the rollout top-3 slots [0, 1, 2].
TOPK_TABLE = {1: (0.0366020532, 0.13), 4: (0.0350712537, 0.12)}


def columns(table, dtype):
    return [jnp.asarray(col, dtype) for col in zip(*table, strict=True)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_tv_mask_table(x64, dtype):
    mu, pi, adv, expected = columns(BINARY_TV_TABLE, dtype)
    logp, logmu = jnp.log(pi), jnp.log(mu)
    d = dppo.binary_tv(logp, logmu)
    np.testing.assert_allclose(d, np.abs(np.asarray(mu) - np.asarray(pi)), rtol=1e-6)
    m = dppo.mask(d, logp, logmu, adv, jnp.ones_like(adv), 0.10, 0.20)
    np.testing.assert_array_equal(m, expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_kl_values_and_mask_table(x64, dtype):
    mu, pi, adv, want_d, expected = columns(BINARY_KL_TABLE, dtype)
    logp, logmu = jnp.log(pi), jnp.log(mu)
    d = dppo.binary_kl(logp, logmu)
    # The spec gives D to 7 significant digits: agreement to half a unit in the last one.
    np.testing.assert_allclose(d, want_d, rtol=0, atol=5e-8 if dtype == "float64" else 1e-7)
    np.testing.assert_array_equal(
        dppo.mask(d, logp, logmu, adv, jnp.ones_like(adv), 0.05, 0.05), expected
    )


def slots_for(sampled, dtype="float64", k=3):
    mu, pi = jnp.asarray(MU6, dtype), jnp.asarray(PI6, dtype)
    ids = jnp.argsort(-mu)[:k]
    return dppo.topk_slots(
        ids,
        jnp.log(mu[ids]),
        jnp.log(pi[ids]),
        jnp.asarray(sampled),
        jnp.log(pi[sampled]),
        jnp.log(mu[sampled]),
    )


@pytest.mark.parametrize("sampled", sorted(TOPK_TABLE))
def test_topk_table(x64, sampled):
    logq_k, logmu_k = slots_for(sampled)
    want_kl, want_tv = TOPK_TABLE[sampled]
    np.testing.assert_allclose(dppo.topk_kl(logq_k, logmu_k), want_kl, rtol=1e-9)
    np.testing.assert_allclose(dppo.topk_tv(logq_k, logmu_k), want_tv, rtol=1e-9)
    # A swapped argument order (KL(pi || mu)) must not reproduce the value.
    assert abs(float(dppo.topk_kl(logmu_k, logq_k)) - want_kl) > 1e-4


@pytest.mark.parametrize("sampled", sorted(TOPK_TABLE))
def test_topk_table_float32(sampled):
    logq_k, logmu_k = slots_for(sampled, "float32")
    want_kl, want_tv = TOPK_TABLE[sampled]
    np.testing.assert_allclose(dppo.topk_kl(logq_k, logmu_k), want_kl, rtol=1e-5)
    np.testing.assert_allclose(dppo.topk_tv(logq_k, logmu_k), want_tv, rtol=1e-6)


def test_topk_slots_overwrite_rule(x64):
    logq_k, logmu_k = slots_for(4)
    np.testing.assert_allclose(jnp.exp(logmu_k), [0.50, 0.20, 0.04])
    np.testing.assert_allclose(jnp.exp(logq_k), [0.40, 0.30, 0.06])
    # Sampled token already in the top-K: the slots are the rollout top-K unchanged.
    logq_k, logmu_k = slots_for(2)
    np.testing.assert_allclose(jnp.exp(logmu_k), [0.50, 0.20, 0.15])


def test_full_vocabulary_kl_and_direction(x64):
    mu, pi = np.array(MU6), np.array(PI6)
    np.testing.assert_allclose((mu * np.log(mu / pi)).sum(), 0.0408002106, rtol=1e-9)


def test_mask_strict_comparisons_and_zero_advantage(x64):
    logmu = jnp.log(jnp.full(6, 0.5))
    logp = jnp.log(jnp.array([0.7, 0.3, 0.3, 0.7, 0.3, 0.7]))
    adv = jnp.array([1.0, -1.0, 0.0, 0.0, 1.0, -1.0])
    # D exactly at delta is kept (strict >); A = 0 is the negative branch.
    d = jnp.array([0.2, 0.1, 0.11, 0.21, 0.5, 0.5])
    m = dppo.mask(d, logp, logmu, adv, jnp.ones(6), 0.1, 0.2)
    np.testing.assert_array_equal(m, [1, 1, 0, 1, 1, 1])


def test_mask_respects_response_mask_and_broadcasts_sequence_advantages(x64):
    logp = jnp.log(jnp.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1]]))
    logmu = jnp.log(jnp.full((2, 3), 0.5))
    d = jnp.abs(jnp.exp(logp) - 0.5)
    response = jnp.array([[1, 1, 0], [1, 0, 0]], bool)
    m = dppo.mask(d, logp, logmu, jnp.array([1.0, 1.0]), response, 0.1, 0.1)
    np.testing.assert_array_equal(m, [[0, 0, 0], [1, 0, 0]])
    assert m.dtype == logp.dtype


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def random_distributions(seed, n, v):
    """(mu, pi, sampled) in numpy float64: pi a perturbation of mu, tokens drawn from mu."""
    rng = np.random.default_rng(seed)
    logmu = log_softmax(2.0 * rng.standard_normal((n, v)))
    logpi = log_softmax(logmu + 0.8 * rng.standard_normal((n, v)))
    sampled = (logmu + rng.gumbel(size=(n, v))).argmax(-1)
    return np.exp(logmu), np.exp(logpi), sampled


def slots_from_full(mu, pi, sampled, k):
    ids = np.argsort(-mu, axis=-1)[:, :k]
    logmu, logpi = np.log(mu), np.log(pi)
    take = lambda x, i: np.take_along_axis(x, i, axis=-1)
    return dppo.topk_slots(
        jnp.asarray(ids),
        jnp.asarray(take(logmu, ids)),
        jnp.asarray(take(logpi, ids)),
        jnp.asarray(sampled),
        jnp.asarray(take(logpi, sampled[:, None])[:, 0]),
        jnp.asarray(take(logmu, sampled[:, None])[:, 0]),
    )


def sampled_log_probs(mu, pi, sampled):
    rows = np.arange(len(sampled))
    return jnp.asarray(np.log(pi[rows, sampled])), jnp.asarray(np.log(mu[rows, sampled]))


def test_topk_with_k1_equals_binary(x64):
    mu, pi, sampled = random_distributions(0, 64, 10)
    logq_k, logmu_k = slots_from_full(mu, pi, sampled, 1)
    logp, logmu = sampled_log_probs(mu, pi, sampled)
    np.testing.assert_allclose(
        dppo.topk_tv(logq_k, logmu_k), dppo.binary_tv(logp, logmu), rtol=1e-9
    )
    np.testing.assert_allclose(
        dppo.topk_kl(logq_k, logmu_k), dppo.binary_kl(logp, logmu), rtol=1e-9
    )


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_topk_and_binary_are_lower_bounds_of_full_vocabulary(x64, k):
    mu, pi, sampled = random_distributions(k, 256, 10)
    logq_k, logmu_k = slots_from_full(mu, pi, sampled, k)
    full_kl = (mu * np.log(mu / pi)).sum(-1)
    full_tv = 0.5 * np.abs(mu - pi).sum(-1)
    slack = 1e-12
    topk_kl = np.asarray(dppo.topk_kl(logq_k, logmu_k))
    assert np.all(topk_kl <= full_kl + slack)
    assert np.all(np.asarray(dppo.topk_tv(logq_k, logmu_k)) <= full_tv + slack)
    logp, logmu = sampled_log_probs(mu, pi, sampled)
    assert np.all(np.asarray(dppo.binary_kl(logp, logmu)) <= full_kl + slack)
    assert np.all(np.asarray(dppo.binary_tv(logp, logmu)) <= full_tv + slack)
    # Not vacuous: the estimate is positive and grows toward the full value with K.
    assert topk_kl.mean() > 0.1 * full_kl.mean()


def test_underflowed_and_truncated_slots_are_finite(x64):
    # mu = 0 in a slot (underflow or top-p truncation to -inf) adds nothing: no 0 * -inf.
    logmu_k = jnp.log(jnp.array([0.6, 0.4, 0.0]))
    logq_k = jnp.log(jnp.array([0.5, 0.3, 0.0]))
    kl = dppo.topk_kl(logq_k, logmu_k)
    assert np.isfinite(kl)
    want = 0.6 * np.log(0.6 / 0.5) + 0.4 * np.log(0.4 / 0.3) + 1e-12 * np.log(1e-12 / 0.2)
    np.testing.assert_allclose(kl, want, rtol=1e-9)
    # Binary KL at mu = 1 and at mu = 0 (both outcomes degenerate) stays finite.
    assert np.isfinite(dppo.binary_kl(jnp.log(0.7), jnp.array(0.0)))
    assert np.isfinite(dppo.binary_kl(jnp.log(0.7), jnp.array(-jnp.inf)))
    np.testing.assert_allclose(dppo.binary_kl(jnp.log(0.7), jnp.array(0.0)), -np.log(0.7))
