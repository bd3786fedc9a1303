"""The host-side check helpers: domains, messages, and no value checks on traced inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.checks import (
    ArgumentError,
    Choice,
    Domain,
    MissingKeyError,
    check_id_sequence,
    check_ids,
    check_shape,
    check_value,
    require_keys,
)


def test_domains_describe_themselves_and_refuse_nan_bool_and_strings():
    assert str(Domain(0, low_open=True, finite=True)) == "> 0 and finite"
    assert str(Domain(0, 1, high_open=True)) == "in [0, 1)"
    assert str(Domain(1, integer=True)) == "an integer >= 1"
    assert str(Domain(0, low_open=True, none_ok="the default")) == "> 0 (or None: the default)"
    assert str(Choice(("a", "b"))) == "one of a, b"
    d = Domain(0, low_open=True)
    assert d.contains(1) and d.contains(np.float32(2.0)) and d.contains(float("inf"))
    for bad in (0, -1.0, float("nan"), True, "1", None):
        assert not d.contains(bad)
    assert not Domain(1, integer=True).contains(2.0)


def test_value_messages_name_the_argument_value_and_domain():
    with pytest.raises(ArgumentError, match=r"^eps=nan is out of range: it must be > 0$"):
        check_value("eps", float("nan"), Domain(0, low_open=True))
    with pytest.raises(ArgumentError, match=r"^eps=-1.0 is out of range"):
        check_value("eps", jnp.array([0.1, -1.0]), Domain(0, low_open=True))
    with pytest.raises(ArgumentError, match=r"^mode='x' is not valid: it must be one of a, b$"):
        check_value("mode", "x", Choice(("a", "b")))


def test_traced_values_are_not_checked():
    """Under jit only shapes and dtypes are checked: the compiled program gets no checks."""

    @jax.jit
    def f(eps, ids):
        check_value("eps", eps, Domain(0, low_open=True))
        check_ids("ids", ids, 4)
        return eps

    assert float(f(jnp.float32(-1.0), jnp.array([7]))) == -1.0
    with pytest.raises(ArgumentError, match="integer dtype"):
        f(jnp.float32(1.0), jnp.array([1.0]))


def test_ids_shapes_and_keys():
    with pytest.raises(ArgumentError, match=r"ids holds id 5 at index \(1, 0\), outside \[0, 5\)"):
        check_ids("ids", np.array([[0, 1], [5, 2]]), 5)
    check_ids("ids", np.array([[0, -1]]), 5, where=np.array([[True, False]]))
    with pytest.raises(ArgumentError, match=r"holds id -1"):
        check_ids("ids", np.array([[0, -1]]), None)
    with pytest.raises(ArgumentError, match=r"stop_ids must be a sequence of token ids"):
        check_id_sequence("stop_ids", 3, 10)
    with pytest.raises(ArgumentError, match=r"stop_ids\[1\]=12 is outside \[0, 10\)"):
        check_id_sequence("stop_ids", [1, 12], 10)
    with pytest.raises(ArgumentError, match=r"mask must be \[B, T\] = \(2, \?\) as x, got"):
        check_shape("mask", np.zeros((3, 4)), (2, None), "[B, T]", "as x")
    with pytest.raises(MissingKeyError, match=r"the clip loss needs 'logp' in its input"):
        require_keys({"old_logp": 0}, ("logp",), "the clip loss")
