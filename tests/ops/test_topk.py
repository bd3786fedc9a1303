"""top_k_by_blocks equals lax.top_k: values, ids (ties included), padding, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.ops.topk import top_k_by_blocks


def assert_same_as_lax(x, k):
    want_values, want_ids = jax.lax.top_k(x, k)
    values, ids = jax.jit(top_k_by_blocks, static_argnums=1)(x, k)
    np.testing.assert_array_equal(np.asarray(values), np.asarray(want_values))
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids))
    assert ids.dtype == jnp.int32
    if x.ndim == 2:  # the same rows given vocabulary first, as the sampler holds its logits
        vocab_first = jax.jit(top_k_by_blocks, static_argnums=1, static_argnames="vocab_major")
        values, ids = vocab_first(x.T, k, vocab_major=True)
        np.testing.assert_array_equal(np.asarray(values), np.asarray(want_values))
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids))
        assert ids.dtype == jnp.int32


@pytest.mark.parametrize("shape,k", [((8, 32768), 64), ((3, 5, 2000), 7), ((4, 1001), 1),
                                     ((2, 4097), 64), ((6, 100), 5)])
def test_random_rows(shape, k):
    x = jax.random.normal(jax.random.key(sum(shape) + k), shape) * 3
    assert_same_as_lax(x, k)


def test_ties_pick_the_lowest_index():
    # Values on a coarse grid: dozens of equal maxima spread over many sub-blocks.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 6, size=(16, 5000)).astype(np.float32))
    assert_same_as_lax(x, 40)
    assert_same_as_lax(jnp.zeros((2, 4096)), 64)
    ints = jnp.asarray(rng.integers(-3, 3, size=(4, 3000)).astype(np.int32))
    assert_same_as_lax(ints, 20)


def test_rows_of_minus_infinity_never_return_padding():
    # 3001 is not a multiple of 32: the last sub-block is padded; k exceeds the finite count.
    x = jnp.full((3, 3001), -jnp.inf).at[:, [5, 700, 3000]].set(jnp.array([1.0, 2.0, 3.0]))
    assert_same_as_lax(x, 10)
    _, ids = top_k_by_blocks(x, 10)
    assert int(ids.max()) < 3001


def test_gradient_matches_lax_top_k():
    x = jax.random.normal(jax.random.key(1), (4, 4096))
    w = jax.random.normal(jax.random.key(2), (4, 16))

    def loss(fn):
        return jax.grad(lambda x: jnp.sum(fn(x, 16)[0] * w))(x)

    np.testing.assert_array_equal(loss(top_k_by_blocks), loss(jax.lax.top_k))
