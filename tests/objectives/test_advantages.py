"""Advantage estimators: hand values, grouping by size or ids, zero-variance groups, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.objectives import ADVANTAGE_ESTIMATORS, advantages

NAMES = ["grpo", "drgrpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
# Three groups of four: mixed, constant (0.1 is not exact in binary), one outlier.
REWARDS = np.array([1.0, 0.0, 1.0, 0.0, 0.1, 0.1, 0.1, 0.1, 3.0, 3.0, 3.0, 5.0])


def grouped(x):
    return x.reshape(3, 4)


def test_registry_holds_every_estimator_and_lists_them_on_unknown_names():
    assert set(NAMES) <= set(ADVANTAGE_ESTIMATORS.names())
    with pytest.raises(KeyError) as err:
        ADVANTAGE_ESTIMATORS.get("gpro")
    for name in NAMES:
        assert name in str(err.value)


def test_grpo_matches_numpy_with_unbiased_std_and_eps():
    got = np.asarray(advantages.grpo(jnp.asarray(REWARDS), group_size=4, eps=0.1))
    g = grouped(REWARDS)
    want = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 0.1)
    want[1] = 0.0
    np.testing.assert_allclose(grouped(got), want, rtol=1e-6)


def test_drgrpo_and_rloo_match_numpy():
    g = grouped(REWARDS)
    dr = np.asarray(advantages.drgrpo(jnp.asarray(REWARDS), group_size=4))
    np.testing.assert_allclose(grouped(dr), g - g.mean(1, keepdims=True), atol=1e-6)
    loo = np.asarray(advantages.rloo(jnp.asarray(REWARDS), group_size=4))
    others = (g.sum(1, keepdims=True) - g) / 3
    np.testing.assert_allclose(grouped(loo), g - others, atol=1e-6)


def test_reinforce_pp_normalizes_the_whole_batch_and_ignores_groups():
    got = advantages.reinforce_pp(jnp.asarray(REWARDS), group_size=4, eps=0.0)
    want = (REWARDS - REWARDS.mean()) / REWARDS.std(ddof=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    ungrouped = advantages.reinforce_pp(jnp.asarray(REWARDS), eps=0.0)
    np.testing.assert_array_equal(got, ungrouped)


def test_reinforce_pp_baseline_centers_groups_then_normalizes_the_batch():
    got = np.asarray(advantages.reinforce_pp_baseline(jnp.asarray(REWARDS), group_size=4, eps=0.0))
    g = grouped(REWARDS)
    centered = (g - g.mean(1, keepdims=True)).ravel()
    want = (centered - centered.mean()) / centered.std(ddof=1)
    want[4:8] = 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_zero_variance_groups_give_exact_zeros(name):
    fn = ADVANTAGE_ESTIMATORS.get(name)
    got = np.asarray(fn(jnp.asarray(REWARDS), group_size=4))
    assert np.all(np.isfinite(got))
    if name != "reinforce_pp":
        assert np.all(got[4:8] == 0.0)
    constant = fn(jnp.full(6, 0.7), group_size=3)
    assert np.all(np.asarray(constant) == 0.0)
    singletons = fn(jnp.array([1.0, 0.0, 2.0]), group_size=1)
    assert np.all(np.isfinite(singletons))
    if name != "reinforce_pp":
        assert np.all(np.asarray(singletons) == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_group_ids_in_any_order_match_group_size(name):
    fn = ADVANTAGE_ESTIMATORS.get(name)
    perm = np.random.default_rng(0).permutation(12)
    ids = np.array([7, 7, 7, 7, -2, -2, -2, -2, 40, 40, 40, 40])
    by_size = np.asarray(fn(jnp.asarray(REWARDS), group_size=4))
    by_ids = jax.jit(lambda r, g: fn(r, group_ids=g))(jnp.asarray(REWARDS[perm]), ids[perm])
    np.testing.assert_allclose(np.asarray(by_ids), by_size[perm], rtol=1e-6, atol=1e-7)


def test_unequal_group_sizes_with_ids():
    rewards = jnp.array([1.0, 0.0, 2.0, 5.0, 5.0])
    ids = jnp.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(advantages.drgrpo(rewards, group_ids=ids), [0, -1, 1, 0, 0])
    np.testing.assert_allclose(advantages.rloo(rewards, group_ids=ids), [0, -1.5, 1.5, 0, 0])


def test_grouping_arguments_are_validated():
    r = jnp.arange(6.0)
    with pytest.raises(ValueError, match="exactly one"):
        advantages.grpo(r)
    with pytest.raises(ValueError, match="exactly one"):
        advantages.grpo(r, group_size=3, group_ids=jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match="divide"):
        advantages.grpo(r, group_size=4)
