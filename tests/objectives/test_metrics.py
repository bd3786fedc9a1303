"""Metric (sum, count) pairs: merging batches equals computing on their union."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.objectives.metrics import Metric, merge_metrics, metric_values


def test_merged_halves_equal_the_whole():
    x = jax.random.normal(jax.random.key(0), (6, 5))
    valid = jax.random.uniform(jax.random.key(1), (6, 5)) > 0.4
    kinds = {"mean": Metric.mean, "max": Metric.max, "min": Metric.min}
    whole = {k: f(x, valid) for k, f in kinds.items()} | {"n": Metric.sum(valid.sum())}
    top = {k: f(x[:2], valid[:2]) for k, f in kinds.items()} | {"n": Metric.sum(valid[:2].sum())}
    rest = {k: f(x[2:], valid[2:]) for k, f in kinds.items()} | {"n": Metric.sum(valid[2:].sum())}
    merged = metric_values(merge_metrics(top, rest))
    expected = {"mean": x[valid].mean(), "max": x[valid].max(), "min": x[valid].min(),
                "n": valid.sum()}
    for key, value in expected.items():
        np.testing.assert_allclose(merged[key], value, rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(float(whole[key]), value, rtol=1e-6, err_msg=key)


def test_empty_metrics_read_zero_and_merge_with_full_ones():
    x = jnp.arange(4.0)
    none = jnp.zeros(4, bool)
    for make in (Metric.mean, Metric.max, Metric.min):
        assert float(make(x, none)) == 0.0
        assert float(make(x, none).merge(make(x, ~none))) == float(make(x, ~none))


def test_metrics_pass_through_jit_and_refuse_mixed_kinds():
    m = jax.jit(lambda v: Metric.mean(v, v > 0))(jnp.array([1.0, -1.0, 3.0]))
    assert m.kind == "mean" and float(m) == 2.0
    with pytest.raises(ValueError, match="cannot merge"):
        m.merge(Metric.max(jnp.ones(2), jnp.ones(2, bool)))
    with pytest.raises(ValueError, match="keys differ"):
        merge_metrics({"a": m}, {"b": m})
