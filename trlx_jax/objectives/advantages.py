"""Registered advantage estimators: sequence-level advantages from per-completion rewards.

Every estimator has the signature

    fn(rewards [N], *, group_size: int | None = None, group_ids [N] | None = None,
       eps: float = 1e-6) -> advantages [N]

Groups (completions of the same prompt) are given either as a fixed `group_size` (rewards laid
out group after group, N divisible by it) or as arbitrary integer `group_ids` (any order, any
group sizes; jit-compatible). Exactly one of the two is required, except by `reinforce_pp`,
which normalizes over the whole batch and ignores them. `eps` is added to standard deviations.
Standard deviations are unbiased (ddof = 1, as in DeepSeekMath/verl/TRL). A group whose rewards
are all equal (including a group of one) gets exactly zero advantage, never NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trlx_jax.checks import (
    ArgumentError,
    Domain,
    check_integer,
    check_rank,
    check_shape,
    check_value,
    concrete,
    dtype_of,
)
from trlx_jax.objectives import ADVANTAGE_ESTIMATORS

_EPS = Domain(0, finite=True)
_GROUP_SIZE = Domain(1, integer=True)


class _GroupStats(NamedTuple):
    """Per-element statistics of the element's group, all [N]."""

    count: jax.Array
    total: jax.Array
    mean: jax.Array
    std: jax.Array
    constant: jax.Array  # bool: every reward of the group is equal


def _float(rewards: jax.Array, eps: float) -> jax.Array:
    """Checked [N] rewards as a float array of at least float32 precision."""
    check_rank("rewards", rewards, 1, "[N] (one reward per completion)")
    dtype = dtype_of(rewards)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number):
        raise ArgumentError(f"rewards must be numbers, got dtype {dtype}")
    values = concrete(rewards)
    if values is not None and not np.isfinite(values).all():
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ArgumentError(
            f"rewards hold the non-finite value {values[i]} at index {i}: advantages would be "
            "NaN for the whole group; make the reward function return finite floats"
        )
    check_value("eps", eps, _EPS)
    rewards = jnp.asarray(rewards)
    return rewards.astype(jnp.promote_types(rewards.dtype, jnp.float32))


def _segments(n: int, group_size: int | None, group_ids: jax.Array | None) -> jax.Array:
    """[N] dense segment index in [0, N) from a fixed group size or arbitrary group ids."""
    if (group_size is None) == (group_ids is None):
        raise ArgumentError("give exactly one of group_size and group_ids")
    if group_size is not None:
        check_value("group_size", group_size, _GROUP_SIZE)
        if n % group_size:
            raise ArgumentError(f"group_size={group_size} must divide N = {n} rewards (rewards "
                                "are laid out group after group); or pass group_ids [N]")
        return jnp.arange(n) // group_size
    check_shape("group_ids", group_ids, (n,), "[N]", "as rewards (one group id per completion)")
    check_integer("group_ids", group_ids, what="group ids")
    _, inverse = jnp.unique(jnp.asarray(group_ids), return_inverse=True, size=n)
    return inverse.reshape(n)


def _unbiased_std(centered: jax.Array, count: jax.Array) -> jax.Array:
    """Unbiased std from summed squared deviations per element's group (0 for count < 2)."""
    return jnp.sqrt(centered / jnp.maximum(count - 1, 1)) * (count > 1)


def _group_stats(
    rewards: jax.Array, group_size: int | None, group_ids: jax.Array | None
) -> _GroupStats:
    """[N] rewards -> statistics of each element's group, broadcast back to [N]."""
    n = rewards.shape[0]
    seg = _segments(n, group_size, group_ids)

    def per_group(fn, values: jax.Array) -> jax.Array:
        return fn(values, seg, num_segments=n)[seg]

    count = per_group(jax.ops.segment_sum, jnp.ones_like(rewards))
    total = per_group(jax.ops.segment_sum, rewards)
    mean = total / count
    squares = per_group(jax.ops.segment_sum, (rewards - mean) ** 2)
    constant = per_group(jax.ops.segment_max, rewards) == per_group(jax.ops.segment_min, rewards)
    return _GroupStats(count, total, mean, _unbiased_std(squares, count), constant)


def _batch_normalize(values: jax.Array, eps: float) -> jax.Array:
    """[N] -> (values - mean) / (unbiased std + eps) over the batch; zeros if all are equal."""
    centered = values - values.mean()
    std = _unbiased_std((centered**2).sum(), jnp.asarray(values.shape[0], values.dtype))
    constant = values.max() == values.min()
    return jnp.where(constant, 0.0, centered / (std + eps))


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo(
    rewards: jax.Array,
    *,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """[N] rewards -> [N] (r - group mean) / (group std + eps) (GRPO)."""
    rewards = _float(rewards, eps)
    g = _group_stats(rewards, group_size, group_ids)
    return jnp.where(g.constant, 0.0, (rewards - g.mean) / (g.std + eps))


@ADVANTAGE_ESTIMATORS.register("drgrpo")
def drgrpo(
    rewards: jax.Array,
    *,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """[N] rewards -> [N] r - group mean (Dr. GRPO: no std division; `eps` unused)."""
    rewards = _float(rewards, eps)
    g = _group_stats(rewards, group_size, group_ids)
    return jnp.where(g.constant, 0.0, rewards - g.mean)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo(
    rewards: jax.Array,
    *,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """[N] rewards -> [N] r - mean of the OTHER rewards of the group (RLOO; `eps` unused)."""
    rewards = _float(rewards, eps)
    g = _group_stats(rewards, group_size, group_ids)
    others = (g.total - rewards) / jnp.maximum(g.count - 1, 1)
    return jnp.where(g.constant, 0.0, rewards - others)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp(
    rewards: jax.Array,
    *,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """[N] rewards -> [N] rewards normalized over the whole batch (REINFORCE++; no groups)."""
    return _batch_normalize(_float(rewards, eps), eps)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")
def reinforce_pp_baseline(
    rewards: jax.Array,
    *,
    group_size: int | None = None,
    group_ids: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """[N] rewards -> [N] (r - group mean), then normalized over the batch (REINFORCE++-baseline).

    Constant groups stay exactly 0 after the batch normalization.
    """
    rewards = _float(rewards, eps)
    g = _group_stats(rewards, group_size, group_ids)
    centered = jnp.where(g.constant, 0.0, rewards - g.mean)
    return jnp.where(g.constant, 0.0, _batch_normalize(centered, eps))
