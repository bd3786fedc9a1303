"""The KV cache of the decode path: a fixed-shape pytree passed into and out of the model.

Layout ("slots" are cache positions 0..S-1, shared by all rows of the batch):

    k, v   [L, B, K, S, Dh]  keys (after RoPE) and values of every layer, in the cache dtype;
                             kv-heads before slots, the layout attention reads without a
                             transpose (a decode step then never copies the cache)
    mask   [B, S] bool       True where the slot holds a real token (False: padding or unwritten)
    index  [] int32          next slot to write; every row writes at the same slot

A call `model(tokens [B, t], positions [B, t], attention_mask [B, t], cache)` writes the t new
tokens into slots [index, index + t), marks them in `mask` with `attention_mask`, lets token j
attend to the valid slots <= index + j, and returns the cache with `index + t`. Prefill is the
same call with the (left-padded) prompt on a fresh cache; decode steps pass t = 1. RoPE uses
the explicit `positions`, so left padding costs slots but never shifts positions. Shapes never
change, so the cache can be the carry of `lax.while_loop` and donated to a jitted step; the
caller must keep `index + t <= S` (a write past the end is clamped by XLA, silently).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from trlx_jax.models.config import ModelConfig
from trlx_jax.models.sharding import constrain

_KV_AXES = ("layers", "batch", "kv_heads", "cache_seq", "head_dim")
_MASK_AXES = ("batch", "cache_seq")


class KVCache(NamedTuple):
    """Keys/values [L, B, K, S, Dh], slot validity [B, S] and the write index [] (see module)."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    index: jax.Array


def init_cache(
    config: ModelConfig, batch: int, max_len: int, dtype: jnp.dtype | str | None = None
) -> KVCache:
    """An empty cache with S = max_len slots; `dtype` defaults to the compute dtype."""
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    dtype = config.compute_dtype if dtype is None else jnp.dtype(dtype)
    return constrain_cache(
        KVCache(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            mask=jnp.zeros((batch, max_len), jnp.bool_),
            index=jnp.zeros((), jnp.int32),
        )
    )


def constrain_cache(cache: KVCache) -> KVCache:
    """Applies the activation sharding rules to the cache; a no-op without a mesh."""
    return KVCache(
        k=constrain(cache.k, _KV_AXES),
        v=constrain(cache.v, _KV_AXES),
        mask=constrain(cache.mask, _MASK_AXES),
        index=cache.index,
    )


def next_positions(cache: KVCache) -> jax.Array:
    """RoPE positions [B] of the next token per row: the count of real tokens written so far."""
    return jnp.sum(cache.mask, axis=-1, dtype=jnp.int32)
