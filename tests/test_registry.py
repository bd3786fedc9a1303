"""The string registry behind losses, advantage estimators, rewards and tasks."""

import pytest

from trlx_jax.registry import Registry, UnknownNameError


def test_lookup_and_errors():
    reg: Registry = Registry("widget")
    reg.register("alpha")(1)
    reg.register("beta")(2)
    assert reg.get("beta") == 2 and reg.names() == ["alpha", "beta"] and "alpha" in reg
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah'.*'alpha'.*alpha, beta"):
        reg.get("alpah")
    with pytest.raises(KeyError):
        reg.get("gamma")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(3)
