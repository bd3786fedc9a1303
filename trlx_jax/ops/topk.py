"""Exact top-K over a large vocabulary axis without sorting all of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trlx_jax.checks import Domain, check_min_rank, check_rank, check_value

# The K largest entries lie in the K sub-blocks with the largest maxima: a sub-block holding
# one of them has its max >= the K-th value, and at most K sub-blocks have (ties aside, where
# the lowest-index rule below still picks the same entries as `lax.top_k`).
_SUB_BLOCK = 32


def top_k_by_blocks(
    x: jax.Array, k: int, *, vocab_major: bool = False
) -> tuple[jax.Array, jax.Array]:
    """[..., V] -> (values [..., k], int32 ids [..., k]), equal to `jax.lax.top_k(x, k)`.

    One pass over the row for the maxima of its 32-entry sub-blocks, then `lax.top_k` over the
    k candidate sub-blocks only (k * 32 entries instead of V; with k = 64 and 32 rows, 1.7x
    faster on a 2-core CPU at V = 32k and 3.9x at Qwen's V = 152k). Candidates stay in index
    order, so equal values come out lowest index first, as in `lax.top_k`. Rows shorter than
    64 k fall back to it. `vocab_major=True` takes x as [V, B] (the sampler's logits layout,
    -> [B, k]): the sub-block maxima then reduce over the leading axis and only the candidates
    are transposed, never the whole array.
    Differentiable like `lax.top_k`, but its backward holds one more [rows, V] buffer; the
    sampler and `ops/logprobs.py` use it where nothing differentiates through it (the chunked
    log-probs' custom VJP gathers the top-K cotangents at the saved ids instead).
    """
    if not vocab_major:
        values, ids, _ = top_k_with_max(x, k)
        return values, ids
    check_rank("x", x, 2, "[V, B] (vocab_major=True)")
    vocab, b = x.shape
    check_value("k", k, Domain(1, vocab, integer=True, note=f"(V = {vocab} entries per row)"))
    if k * _SUB_BLOCK * 2 > vocab:
        values, ids = jax.lax.top_k(x.T, k)
        return values, ids.astype(jnp.int32)
    n_sub = -(-vocab // _SUB_BLOCK)
    tail = n_sub * _SUB_BLOCK - vocab
    sub = jnp.pad(x, ((0, tail), (0, 0)), constant_values=_fill(x)).reshape(n_sub, _SUB_BLOCK, b)
    chosen = jnp.sort(jax.lax.top_k(jnp.max(sub, axis=1).T, k)[1], axis=-1)  # [B, k]
    candidates = jnp.take_along_axis(sub, chosen.T[:, None, :], axis=0)  # [k, 32, B]
    return _from_candidates(candidates.transpose(2, 0, 1).reshape(b, -1), chosen, k, (b,))


def _fill(x: jax.Array) -> jax.Array | float | int:
    """The padding value of the last sub-block: below every entry of x."""
    # Padding sits at the end, so even where it ties with real entries (-inf rows) the
    # lowest-index rule prefers the real ones.
    return -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min


def top_k_with_max(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[..., V] -> (values [..., k], int32 ids [..., k], row max [..., 1]): `top_k_by_blocks`
    and `jnp.max(x, -1, keepdims=True)` from one pass over the row (the max is that of the
    sub-block maxima the top-K needs anyway, so a log-softmax gets its shift for free)."""
    check_min_rank("x", x, 1, "[..., V]")
    *lead, vocab = x.shape
    check_value("k", k, Domain(1, vocab, integer=True, note=f"(V = {vocab} entries per row)"))
    if k * _SUB_BLOCK * 2 > vocab:
        values, ids = jax.lax.top_k(x, k)
        return values, ids.astype(jnp.int32), jnp.max(x, axis=-1, keepdims=True)
    n_sub = -(-vocab // _SUB_BLOCK)
    rows = x.reshape(-1, vocab)
    padded = jnp.pad(rows, ((0, 0), (0, n_sub * _SUB_BLOCK - vocab)), constant_values=_fill(x))
    sub = padded.reshape(rows.shape[0], n_sub, _SUB_BLOCK)
    maxima = jnp.max(sub, axis=-1)
    chosen = jnp.sort(jax.lax.top_k(maxima, k)[1], axis=-1)
    candidates = jnp.take_along_axis(sub, chosen[:, :, None], axis=1).reshape(rows.shape[0], -1)
    values, ids = _from_candidates(candidates, chosen, k, tuple(lead))
    return values, ids, jnp.max(maxima, axis=-1).reshape(*lead, 1)


def _from_candidates(
    candidates: jax.Array, chosen: jax.Array, k: int, lead: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """[R, k * 32] candidate entries of the [R, k] chosen sub-blocks -> values, ids [*lead, k]."""
    values, where = jax.lax.top_k(candidates, k)
    block = jnp.take_along_axis(chosen, where // _SUB_BLOCK, axis=-1)
    ids = (block * _SUB_BLOCK + where % _SUB_BLOCK).astype(jnp.int32)
    return values.reshape(*lead, k), ids.reshape(*lead, k)
