"""The standard metrics bundle every policy loss returns, as exact (sum, count) pairs.

A `Metric` holds a float32 total and a count (or a running max / min), so metrics of several
micro-batches, mini-batches or devices combine exactly (`merge_metrics`) before one division
(`metric_values`): the mean over all response tokens, never a mean of means. A `Metric` also
reads as its value (`float(m)`, `np.asarray(m)`), for interactive use and tests.

Fractions are shares of all response tokens in the batch, so `clip_frac_pos + clip_frac_neg ==
clip_frac` (A = 0 counts on the negative side, as in the DPPO mask). Padding never enters.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from trlx_jax.objectives.dppo import broadcast_advantages

KINDS = ("mean", "max", "min", "sum")


@struct.dataclass
class Metric:
    """A reducible scalar: `total` / `count` for kind "mean", the extreme for "max" / "min"
    (count = number of entries seen, 0 means no value), the plain total for "sum"."""

    total: jax.Array
    count: jax.Array
    kind: str = struct.field(pytree_node=False, default="mean")

    @classmethod
    def mean(cls, x: jax.Array, valid: jax.Array) -> Metric:
        """Masked mean of [..] values over bool `valid` (same shape), as (sum, count)."""
        x = jax.lax.stop_gradient(x).astype(jnp.float32)
        return cls(jnp.where(valid, x, 0.0).sum(), valid.sum().astype(jnp.float32), "mean")

    @classmethod
    def max(cls, x: jax.Array, valid: jax.Array) -> Metric:
        """Masked max (0 when nothing is valid)."""
        x = jax.lax.stop_gradient(x).astype(jnp.float32)
        return cls(jnp.where(valid, x, -jnp.inf).max(), valid.sum().astype(jnp.float32), "max")

    @classmethod
    def min(cls, x: jax.Array, valid: jax.Array) -> Metric:
        """Masked min (0 when nothing is valid)."""
        x = jax.lax.stop_gradient(x).astype(jnp.float32)
        return cls(jnp.where(valid, x, jnp.inf).min(), valid.sum().astype(jnp.float32), "min")

    @classmethod
    def sum(cls, x: jax.Array) -> Metric:
        """A total that adds up across batches (e.g. a token count)."""
        x = jnp.asarray(jax.lax.stop_gradient(x), jnp.float32)
        return cls(x, jnp.ones((), jnp.float32), "sum")

    def merge(self, other: Metric) -> Metric:
        """The metric of both batches together (same kind)."""
        if self.kind != other.kind:
            raise ValueError(f"cannot merge a {self.kind!r} metric with a {other.kind!r} one")
        combine = {"mean": jnp.add, "sum": jnp.add, "max": jnp.maximum, "min": jnp.minimum}
        return Metric(combine[self.kind](self.total, other.total), self.count + other.count,
                      self.kind)

    def value(self) -> jax.Array:
        """The float32 scalar: mean (0 without entries), extreme (0 without entries) or sum."""
        if self.kind == "sum":
            return self.total
        if self.kind == "mean":
            return self.total / jnp.maximum(self.count, 1.0)
        return jnp.where(self.count > 0, self.total, 0.0)

    def __float__(self) -> float:
        return float(self.value())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.value(), dtype=dtype)


Metrics = Mapping[str, Metric]


def merge_metrics(a: Metrics, b: Metrics) -> dict[str, Metric]:
    """Key-wise merge of two metric dicts with the same keys."""
    if set(a) != set(b):
        raise ValueError(f"metric keys differ: {sorted(set(a) ^ set(b))}")
    return {k: a[k].merge(b[k]) for k in a}


def metric_values(metrics: Metrics) -> dict[str, jax.Array]:
    """{name: Metric} -> {name: float32 scalar}."""
    return {k: m.value() for k, m in metrics.items()}


def policy_metrics(
    *,
    log_ratio: jax.Array,
    advantages: jax.Array,
    response_mask: jax.Array,
    clipped: jax.Array,
    entropy: jax.Array | None = None,
    divergence: jax.Array | None = None,
) -> dict[str, Metric]:
    """[B, T] capped log(pi / mu), [B] or [B, T] A, [B, T] mask and clipped flags (+ [B, T]
    entropy, DPPO divergence) -> dict of Metrics over response tokens.

    Keys: num_tokens, clip_frac(_pos/_neg) (tokens whose gradient the trust region removed),
    ratio_mean/min/max, abs_log_ratio_mean, approx_kl (k3 estimate of KL(mu || pi), samples
    from mu), entropy, divergence_mean, divergence_max.
    """
    valid = response_mask.astype(bool)
    log_ratio = jax.lax.stop_gradient(log_ratio).astype(jnp.float32)
    positive = broadcast_advantages(advantages, log_ratio) > 0
    clipped = clipped.astype(bool) & valid
    ratio = jnp.exp(log_ratio)
    out = {
        "num_tokens": Metric.sum(valid.sum()),
        "clip_frac": Metric.mean(clipped, valid),
        "clip_frac_pos": Metric.mean(clipped & positive, valid),
        "clip_frac_neg": Metric.mean(clipped & ~positive, valid),
        "ratio_mean": Metric.mean(ratio, valid),
        "ratio_min": Metric.min(ratio, valid),
        "ratio_max": Metric.max(ratio, valid),
        "abs_log_ratio_mean": Metric.mean(jnp.abs(log_ratio), valid),
        # k3 with r = pi/mu: (r - 1) - log r >= 0, unbiased for KL(mu || pi) under mu.
        "approx_kl": Metric.mean(ratio - 1.0 - log_ratio, valid),
    }
    if entropy is not None:
        out["entropy"] = Metric.mean(entropy, valid)
    if divergence is not None:
        out["divergence_mean"] = Metric.mean(divergence, valid)
        out["divergence_max"] = Metric.max(divergence, valid)
    return out
