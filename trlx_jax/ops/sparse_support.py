"""The sparse top-K support on which TROLL projects (specs/troll.md section 3), per token.

Each policy keeps its most likely tokens until K are kept or their mass reaches 1 - delta, plus
the sampled token; a token a policy did not keep gets the floor probability 1e-12, and each
sparse vector is renormalized over the full vocabulary. The projection then runs over the union
U of both kept sets plus one lumped tail slot holding the V - |U| tokens nobody kept (they share
one (new, old) pair, so lumping is exact).

Slot layout along the last axis (S = K_new + K_old + 2):

    [0, K_new)             the new policy's top-K ids
    [K_new, K_new + K_old) the old policy's top-K ids
    K_new + K_old          the sampled token (always valid: its slot is `sampled_slot`)
    K_new + K_old + 1      the lumped tail, log-mass log(m) + floor (masked when m = 0)

De-duplication: a token is valid in exactly one slot: the sampled slot, else its new-block slot
(if either policy kept it), else its old-block slot (if the old policy kept it).
Inputs must list distinct ids within each top-K row (as `lax.top_k` does); their order is free.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from trlx_jax.checks import (
    Domain,
    check_floating,
    check_ids,
    check_min_rank,
    check_shape,
    check_value,
    shape_of,
)

_DELTA = Domain(0, 1, high_open=True)
FLOOR_PROB = 1e-12
LOG_FLOOR = math.log(FLOOR_PROB)  # -27.631021115928547


class SparseSupport(NamedTuple):
    """Slot arrays of one batch of tokens ([..., S]; `sampled_slot` is [...])."""

    a: jax.Array  # new policy's sparse log-probs (renormalized over the vocabulary)
    b: jax.Array  # old policy's sparse log-probs (renormalized over the vocabulary)
    valid: jax.Array  # bool: slots that carry a distinct token (or the non-empty tail)
    sampled_slot: jax.Array  # int32 index of the sampled token's slot


def kept_mask(logp: jax.Array, k: int | jax.Array, delta: float) -> jax.Array:
    """[..., K] log-probs -> bool [..., K]: kept while fewer than k more likely tokens are kept
    and their mass is below 1 - delta (ties broken by position)."""
    check_value("delta", delta, _DELTA)
    logp = jax.lax.stop_gradient(logp)
    rank = jnp.arange(logp.shape[-1])

    def rule(sorted_logp: jax.Array) -> jax.Array:
        p = jnp.exp(sorted_logp)
        mass_before = jnp.cumsum(p, axis=-1) - p
        return (rank < k) & (mass_before < 1 - delta)

    def any_order(logp: jax.Array) -> jax.Array:
        order = jnp.argsort(-logp, axis=-1, stable=True)
        kept = rule(jnp.take_along_axis(logp, order, axis=-1))
        return jnp.put_along_axis(jnp.zeros(logp.shape, bool), order, kept, -1, inplace=False)

    # Top-K rows come sorted from lax.top_k; sorting them again costs 25x the rule itself.
    in_order = jnp.all(logp[..., :-1] >= logp[..., 1:])
    return jax.lax.cond(in_order, rule, any_order, logp)


def _log_normalize(x: jax.Array, valid: jax.Array) -> jax.Array:
    """[..., S] -> x - logsumexp over valid slots (finite dummies at masked slots)."""
    x = jnp.where(valid, x, LOG_FLOOR)
    lse = jax.nn.logsumexp(jnp.where(valid, x, -jnp.inf), axis=-1, keepdims=True)
    return jnp.where(valid, x - lse, LOG_FLOOR)


def _check_args(
    new_topk_ids: jax.Array, new_topk_logp: jax.Array, old_topk_ids: jax.Array,
    old_topk_logp: jax.Array, sampled_ids: jax.Array, new_sampled_logp: jax.Array,
    old_sampled_logp: jax.Array, vocab_size: int | jax.Array, k: int, delta: float,
    new_logp_at_old_topk: jax.Array | None,
) -> None:
    """Shapes, dtypes, settings and (when concrete) id ranges of `sparse_support`'s arguments."""
    check_value("vocab_size", vocab_size, Domain(1, integer=True))
    check_value("k", k, Domain(1, integer=True))
    check_value("delta", delta, _DELTA)
    lead = shape_of(sampled_ids)
    pairs = [("new_topk_ids", new_topk_ids, "new_topk_logp", new_topk_logp),
             ("old_topk_ids", old_topk_ids, "old_topk_logp", old_topk_logp)]
    for ids_name, ids, logp_name, logp in pairs:
        shape = check_min_rank(ids_name, ids, 1, "[..., K]")
        check_shape(ids_name, ids, (*lead, shape[-1]), "[..., K]", "with [...] of sampled_ids")
        check_shape(logp_name, logp, shape, "[..., K]", f"as {ids_name}")
        check_floating(logp_name, logp)
        check_ids(ids_name, ids, vocab_size, vocab_from="vocab_size")
    check_ids("sampled_ids", sampled_ids, vocab_size, vocab_from="vocab_size")
    for name, x in (("new_sampled_logp", new_sampled_logp),
                    ("old_sampled_logp", old_sampled_logp)):
        check_shape(name, x, lead, "[...]", "as sampled_ids")
    if new_logp_at_old_topk is not None:
        check_shape("new_logp_at_old_topk", new_logp_at_old_topk, shape_of(old_topk_ids),
                    "[..., K_old]", "as old_topk_ids")


def sparse_support(
    new_topk_ids: jax.Array,
    new_topk_logp: jax.Array,
    old_topk_ids: jax.Array,
    old_topk_logp: jax.Array,
    sampled_ids: jax.Array,
    new_sampled_logp: jax.Array,
    old_sampled_logp: jax.Array,
    vocab_size: int | jax.Array,
    *,
    k: int = 64,
    delta: float = 1e-5,
    new_logp_at_old_topk: jax.Array | None = None,
    new_logp_on_union: bool = False,
) -> SparseSupport:
    """Builds TROLL's slot arrays from both policies' top-K ([..., K] ids and log-probs, nats).

    sampled_ids / new_sampled_logp / old_sampled_logp: [...] the sampled token and its full-
    vocabulary log-probs under each policy. vocab_size: V (may be traced). k (clamped to V) and
    delta: the keep rule.
    new_logp_on_union: give the new policy its true log-probs on the whole union (needs
    new_logp_at_old_topk, the new policy at the old top-K ids); off = the reference behaviour,
    where tokens only the old policy kept get the new policy's floor. Gradients flow to the new
    policy's log-probs (top-K, sampled and, with the option, at the old ids).
    """
    if new_logp_on_union and new_logp_at_old_topk is None:
        raise ValueError("new_logp_on_union needs new_logp_at_old_topk")
    _check_args(new_topk_ids, new_topk_logp, old_topk_ids, old_topk_logp, sampled_ids,
                new_sampled_logp, old_sampled_logp, vocab_size, k, delta, new_logp_at_old_topk)
    return _sparse_support(new_topk_ids, new_topk_logp, old_topk_ids, old_topk_logp, sampled_ids,
                           new_sampled_logp, old_sampled_logp, vocab_size, k, delta,
                           new_logp_at_old_topk, new_logp_on_union)


# One compiled program per shape also for eager calls (op by op, one call took seconds).
@functools.partial(jax.jit, static_argnums=11)
def _sparse_support(
    new_topk_ids: jax.Array, new_topk_logp: jax.Array, old_topk_ids: jax.Array,
    old_topk_logp: jax.Array, sampled_ids: jax.Array, new_sampled_logp: jax.Array,
    old_sampled_logp: jax.Array, vocab_size: int | jax.Array, k: int | jax.Array,
    delta: float | jax.Array, new_logp_at_old_topk: jax.Array | None, new_logp_on_union: bool,
) -> SparseSupport:
    """`sparse_support` after its host-side checks."""
    k = jnp.minimum(k, vocab_size)
    dtype = jnp.promote_types(jnp.result_type(new_topk_logp, old_topk_logp), jnp.float32)
    floor = jnp.asarray(LOG_FLOOR, dtype)
    n_ids, o_ids = new_topk_ids, old_topk_ids
    n_logp = new_topk_logp.astype(dtype)
    o_logp = old_topk_logp.astype(dtype)
    s_id = sampled_ids[..., None]

    n_kept = kept_mask(n_logp, k, delta)
    o_kept = kept_mask(o_logp, k, delta)
    n_is_sampled = n_ids == s_id
    o_is_sampled = o_ids == s_id
    # [..., K_new, K_old] id matches between the blocks (at most one per row and column).
    same = n_ids[..., :, None] == o_ids[..., None, :]
    match_kept = same & o_kept[..., None, :]
    n_in_old_kept = match_kept.any(axis=-1)
    o_in_new = same.any(axis=-2)
    # The old policy's log-prob of a new-block token it kept (where for NaN safety: -inf logps).
    old_at_new = jnp.sum(jnp.where(match_kept, o_logp[..., None, :], 0.0), axis=-1)

    n_valid = ~n_is_sampled & (n_kept | n_in_old_kept)
    o_valid = ~o_is_sampled & ~o_in_new & o_kept
    n_a = n_logp if new_logp_on_union else jnp.where(n_kept, n_logp, floor)
    n_b = jnp.where(n_in_old_kept, old_at_new, floor)
    if new_logp_on_union:
        o_a = new_logp_at_old_topk.astype(dtype)
    else:
        o_a = jnp.broadcast_to(floor, o_logp.shape)

    batch = sampled_ids.shape
    count = n_valid.sum(-1) + o_valid.sum(-1) + 1
    tail_size = jnp.maximum(vocab_size - count, 0)
    tail_valid = tail_size > 0
    tail = floor + jnp.log(jnp.where(tail_valid, tail_size, 1).astype(dtype))
    a = jnp.concatenate(
        [n_a, o_a, new_sampled_logp.astype(dtype)[..., None], tail[..., None]], axis=-1
    )
    b = jnp.concatenate(
        [n_b, o_logp, old_sampled_logp.astype(dtype)[..., None], tail[..., None]], axis=-1
    )
    valid = jnp.concatenate(
        [n_valid, o_valid, jnp.ones((*batch, 1), bool), tail_valid[..., None]], axis=-1
    )
    sampled_slot = jnp.full(batch, n_ids.shape[-1] + o_ids.shape[-1], jnp.int32)
    return SparseSupport(_log_normalize(a, valid), _log_normalize(b, valid), valid, sampled_slot)
