"""Per-token log-probs, entropy and top-K from final hidden states, chunked over tokens.

The LM-head projection and the log-softmax are evaluated on blocks of `chunk_size` tokens
inside a `lax.map` whose body is rematerialized (`jax.checkpoint`), so neither the forward nor
the backward pass ever holds more than one `[chunk_size, V]` float32 block of logits. All math
is float32 whatever the input dtype (float64 inputs stay float64, for gradient checks), with
the temperature applied as in the sampler
(`log_softmax(logits / temperature)` over the full vocabulary, see `trlx_jax.rollout.sampling`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenLogProbs(NamedTuple):
    """Outputs of `token_logprobs`; disabled outputs are None. Float32 (or float64), nats."""

    logp: jax.Array  # [B, T] log-prob of the target token
    entropy: jax.Array | None  # [B, T] entropy of the full distribution
    topk_ids: jax.Array | None  # [B, T, K] int32, most likely first
    topk_logp: jax.Array | None  # [B, T, K]
    gathered_logp: jax.Array | None  # [B, T, K'] log-probs at `gather_ids`


def _block(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    temperature: float,
    top_k: int,
    with_entropy: bool,
) -> TokenLogProbs:
    """[C, D] hidden, [D, V] f32/f64 head, [C] ids, [C, K'] ids -> outputs for C tokens."""
    logits = jnp.dot(hidden.astype(lm_head.dtype), lm_head) / temperature
    logp_full = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_full, target_ids[:, None], axis=-1)[:, 0]
    entropy = -jnp.sum(jnp.exp(logp_full) * logp_full, axis=-1) if with_entropy else None
    topk_ids = topk_logp = gathered = None
    if top_k:
        topk_logp, topk_ids = jax.lax.top_k(logp_full, top_k)
        topk_ids = topk_ids.astype(jnp.int32)
    if gather_ids is not None:
        gathered = jnp.take_along_axis(logp_full, gather_ids, axis=-1)
    return TokenLogProbs(logp, entropy, topk_ids, topk_logp, gathered)


def token_logprobs(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    gather_ids: jax.Array | None = None,
    entropy: bool = True,
    chunk_size: int | None = 1024,
) -> TokenLogProbs:
    """[B, T, D] hidden, [D, V] LM head, [B, T] ids (+ [B, T, K'] gather_ids) -> TokenLogProbs.

    `top_k` (static) adds the K most likely ids and their log-probs; `chunk_size=None` computes
    all tokens in one block (the naive reference: materializes [B*T, V] float32).
    """
    batch, length, dim = hidden.shape
    n = batch * length
    flat_hidden = hidden.reshape(n, dim)
    flat_ids = target_ids.reshape(n).astype(jnp.int32)
    flat_gather = None if gather_ids is None else gather_ids.reshape(n, -1).astype(jnp.int32)
    # One f32 copy of the head outside the loop: its gradient is then accumulated in f32 across
    # chunks even when the weights are bf16.
    head = lm_head.astype(jnp.promote_types(jnp.result_type(hidden, lm_head), jnp.float32))

    def block(h: jax.Array, ids: jax.Array, gather: jax.Array | None) -> TokenLogProbs:
        return _block(h, head, ids, gather, temperature, top_k, entropy)

    if chunk_size is None or chunk_size >= n:
        out = block(flat_hidden, flat_ids, flat_gather)
    else:
        num_chunks = -(-n // chunk_size)
        pad = num_chunks * chunk_size - n

        def chunked(x: jax.Array) -> jax.Array:
            # The ragged remainder is padded (id 0, zero hidden) and cut off after the map.
            x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
            return x.reshape(num_chunks, chunk_size, *x.shape[1:])

        gather = None if flat_gather is None else chunked(flat_gather)
        xs = (chunked(flat_hidden), chunked(flat_ids), gather)
        body = jax.checkpoint(lambda args: block(*args), prevent_cse=False)
        stacked = jax.lax.map(body, xs)
        out = jax.tree.map(lambda x: x.reshape(num_chunks * chunk_size, *x.shape[2:])[:n], stacked)
    return jax.tree.map(lambda x: x.reshape(batch, length, *x.shape[1:]), out)
