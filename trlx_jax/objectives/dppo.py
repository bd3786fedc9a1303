"""DPPO divergence estimates and trust-region mask (specs/dppo.md), as pure array functions.

All divergences are between the rollout (behaviour) policy mu and the current policy pi, KL in
the direction KL(mu || pi), TV = half L1, in nats. Inputs are log-probs; outputs carry no
special gradient treatment (the losses stop gradients through them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trlx_jax.checks import (
    ArgumentError,
    Domain,
    check_integer,
    check_min_rank,
    check_shape,
    check_value,
    shape_of,
)

REST_FLOOR = 1e-12
_DELTA = Domain(0)


def _same_shape(names: tuple[str, ...], arrays: tuple, layout: str) -> tuple[int, ...]:
    """Raises unless all arrays have the shape of the first; returns it."""
    shape = shape_of(arrays[0])
    for name, x in zip(names[1:], arrays[1:], strict=True):
        check_shape(name, x, shape, layout, f"as {names[0]}")
    return shape


def _log1mexp(x: jax.Array) -> jax.Array:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x; -inf at x = 0."""
    x = jnp.minimum(x, 0.0)
    return jnp.where(x > -jnp.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _xlogy_ratio(p: jax.Array, logp: jax.Array, logq: jax.Array) -> jax.Array:
    """p * (logp - logq) with 0 where p == 0, so an underflowed or -inf slot adds nothing."""
    return jnp.where(p > 0, p * (logp - jnp.where(p > 0, logq, 0.0)), 0.0)


def binary_tv(logp: jax.Array, logmu: jax.Array) -> jax.Array:
    """[...] log pi(a_t), [...] log mu(a_t) -> [...] |mu(a_t) - pi(a_t)| (two-outcome TV)."""
    _same_shape(("logp", "logmu"), (logp, logmu), "[...]")
    return jnp.abs(jnp.exp(logmu) - jnp.exp(logp))


def binary_kl(logp: jax.Array, logmu: jax.Array) -> jax.Array:
    """[...] log pi(a_t), [...] log mu(a_t) -> [...] KL(mu || pi) over {a_t, not a_t}, nats."""
    _same_shape(("logp", "logmu"), (logp, logmu), "[...]")
    mu = jnp.exp(logmu)
    hit = _xlogy_ratio(mu, logmu, logp)
    miss = _xlogy_ratio(-jnp.expm1(logmu), _log1mexp(logmu), _log1mexp(logp))
    return hit + miss


def _rest(log_slots: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., K] slot log-probs -> (slot probs [..., K], rest mass [...] floored at 1e-12)."""
    probs = jnp.exp(log_slots)
    return probs, jnp.maximum(1.0 - probs.sum(axis=-1), REST_FLOOR)


def topk_tv(logq_k: jax.Array, logmu_k: jax.Array) -> jax.Array:
    """[..., K] slot log-probs of pi and mu -> [...] TV over the K slots + one rest bucket.

    The slots are the ones `topk_slots` builds; each policy's rest = max(1 - sum(slots), 1e-12)
    is computed here.
    """
    check_min_rank("logq_k", logq_k, 1, "[..., K]")
    _same_shape(("logq_k", "logmu_k"), (logq_k, logmu_k), "[..., K]")
    q, rest_q = _rest(logq_k)
    mu, rest_mu = _rest(logmu_k)
    return 0.5 * (jnp.abs(mu - q).sum(axis=-1) + jnp.abs(rest_mu - rest_q))


def topk_kl(logq_k: jax.Array, logmu_k: jax.Array) -> jax.Array:
    """[..., K] slot log-probs of pi and mu -> [...] KL(mu || pi) over K slots + rest, nats.

    Rest masses as in `topk_tv`; slots with mu = 0 contribute 0 (no 0 * -inf).
    """
    check_min_rank("logq_k", logq_k, 1, "[..., K]")
    _same_shape(("logq_k", "logmu_k"), (logq_k, logmu_k), "[..., K]")
    q, rest_q = _rest(logq_k)
    mu, rest_mu = _rest(logmu_k)
    slots = _xlogy_ratio(mu, logmu_k, logq_k).sum(axis=-1)
    return slots + rest_mu * (jnp.log(rest_mu) - jnp.log(rest_q))


def topk_slots(
    old_topk_ids: jax.Array,
    old_topk_logp: jax.Array,
    logp_at_old_topk: jax.Array,
    sampled_ids: jax.Array,
    logp: jax.Array,
    logmu: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """[..., K] rollout top-K ids/log-probs, [..., K] pi there, [...] sampled id, log pi, log mu
    -> (logq_k, logmu_k) [..., K] slot log-probs of pi and mu.

    A sampled token outside the rollout top-K overwrites the K-th (lowest-ranked) slot, the
    rule of the authors' code that produced the paper's numbers.
    """
    shape = check_min_rank("old_topk_ids", old_topk_ids, 1, "[..., K]")
    check_integer("old_topk_ids", old_topk_ids)
    check_integer("sampled_ids", sampled_ids)
    _same_shape(("old_topk_ids", "old_topk_logp", "logp_at_old_topk"),
                (old_topk_ids, old_topk_logp, logp_at_old_topk), "[..., K]")
    for name, x in (("sampled_ids", sampled_ids), ("logp", logp), ("logmu", logmu)):
        check_shape(name, x, shape[:-1], "[...]", "as old_topk_ids [..., K] without K")
    k = old_topk_ids.shape[-1]
    in_topk = jnp.any(old_topk_ids == sampled_ids[..., None], axis=-1)
    overwrite = ~in_topk[..., None] & (jnp.arange(k) == k - 1)
    logq_k = jnp.where(overwrite, logp[..., None], logp_at_old_topk)
    logmu_k = jnp.where(overwrite, logmu[..., None], old_topk_logp)
    return logq_k, logmu_k


def broadcast_advantages(advantages: jax.Array, like: jax.Array) -> jax.Array:
    """[B] sequence-level or [B, T] advantages -> broadcastable against `like` [B, T]."""
    extra = like.ndim - advantages.ndim
    return advantages.reshape(advantages.shape + (1,) * extra)


def mask(
    divergence: jax.Array,
    logp: jax.Array,
    logmu: jax.Array,
    advantages: jax.Array,
    response_mask: jax.Array,
    delta_low: float | jax.Array,
    delta_high: float | jax.Array,
) -> jax.Array:
    """[B, T] D, log pi, log mu, [B] or [B, T] A, [B, T] mask -> [B, T] 0/1 DPPO mask.

    0 where (A > 0, pi > mu, D > delta_high) or (A <= 0, pi < mu, D > delta_low), and on
    padding; 1 elsewhere. Comparisons are strict; the direction uses the sampled token.
    """
    shape = _same_shape(("divergence", "logp", "logmu", "response_mask"),
                        (divergence, logp, logmu, response_mask), "[B, T]")
    adv = shape_of(advantages)
    padded = adv + (1,) * (len(shape) - len(adv))
    if not adv or len(adv) > len(shape) or padded[0] != shape[0] or any(
            a not in (1, s) for a, s in zip(padded, shape, strict=True)):
        raise ArgumentError(f"advantages must be [B] or [B, T] (or [B, 1]) with [B, T] = {shape} "
                            f"of logp, got shape {adv}")
    check_value("delta_low", delta_low, _DELTA)
    check_value("delta_high", delta_high, _DELTA)
    d = jax.lax.stop_gradient(divergence)
    logp = jax.lax.stop_gradient(logp)
    logmu = jax.lax.stop_gradient(logmu)
    positive = broadcast_advantages(advantages, logp) > 0
    masked = (positive & (logp > logmu) & (d > delta_high)) | (
        ~positive & (logp < logmu) & (d > delta_low)
    )
    return (~masked & response_mask.astype(bool)).astype(logp.dtype)
