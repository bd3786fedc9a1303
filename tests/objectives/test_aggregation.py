"""Aggregation modes: hand-computed values, padding handling, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.objectives.aggregation import MODES, aggregate, finalize

# Three sequences with 3, 1 and 0 response tokens; the padding holds garbage.
# Padded length T = 6.
TERMS = jnp.array(
    [[1.0, 2.0, 3.0, jnp.nan, 0, 0], [4.0, jnp.inf, 0, 0, 0, 0], [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]]
)
MASK = jnp.array([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool)


@pytest.mark.parametrize(
    "mode,norm_length,want_sum,want_denom",
    [
        ("token-mean", 0, 10.0, 4.0),
        ("seq-mean-token-sum", 0, 10.0, 2.0),
        ("seq-mean-token-mean", 0, 2.0 + 4.0, 2.0),
        ("seq-mean-token-sum-norm", 0, 10.0 / 6, 2.0),
        ("seq-mean-token-sum-norm", 5, 10.0 / 5, 2.0),
    ],
)
def test_values_by_hand(mode, norm_length, want_sum, want_denom):
    loss_sum, denom = aggregate(TERMS, MASK, mode, norm_length)
    np.testing.assert_allclose(loss_sum, want_sum, rtol=1e-7)
    np.testing.assert_allclose(denom, want_denom, rtol=0)
    assert loss_sum.dtype == jnp.float32 and denom.dtype == jnp.float32


def test_float_mask_equals_bool_mask():
    for mode in MODES:
        got = aggregate(TERMS, MASK.astype(jnp.float32), mode)
        want = aggregate(TERMS, MASK, mode)
        np.testing.assert_array_equal(got, want)


def test_unknown_mode_lists_valid_modes():
    with pytest.raises(ValueError) as err:
        aggregate(TERMS, MASK, "token-sum")
    for mode in MODES:
        assert mode in str(err.value)


def test_finalize_divides_and_guards_empty_batches():
    np.testing.assert_allclose(finalize(jnp.array(6.0), jnp.array(4.0)), 1.5)
    assert float(finalize(jnp.array(0.0), jnp.array(0.0))) == 0.0
    loss_sum, denom = aggregate(TERMS[2:], MASK[2:], "token-mean")
    assert float(finalize(loss_sum, denom)) == 0.0
