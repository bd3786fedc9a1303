"""Per-token log-probs, entropy and top-K from final hidden states, chunked over tokens.

The LM-head projection and the log-softmax are evaluated on blocks of about `chunk_size`
tokens inside a `lax.map`, so neither the forward nor the backward pass ever holds more than
one block of float32 logits. The backward is a custom VJP that recomputes each block's logits
from the saved hidden states, row max and log-sum-exp: it needs neither the log-softmax's
reductions nor the top-K again (rematerializing the block, as autodiff would, sorted the
vocabulary a second time). Blocks are slices of the sequence axis across the whole batch: the
scan never runs over the (sharded) batch axis, so the op works unchanged inside a
data-parallel `jit`. All math is float32 whatever the input dtype (float64 inputs stay
float64, for gradient checks), with the temperature applied as in the sampler:
`log_softmax(logits / temperature)` over the full vocabulary (`trlx_jax.rollout.sampling`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from trlx_jax.checks import (
    Domain,
    check_floating,
    check_ids,
    check_rank,
    check_shape,
    check_value,
)
from trlx_jax.ops.topk import top_k_with_max

_TEMPERATURE = Domain(0, finite=True, note="(0 = greedy: log-probs at temperature 1)")
_CHUNK = Domain(1, integer=True, note="(or None: one block)")


class TokenLogProbs(NamedTuple):
    """Outputs of `token_logprobs`; disabled outputs are None. Float32 (or float64), nats."""

    logp: jax.Array  # [B, T] log-prob of the target token
    entropy: jax.Array | None  # [B, T] entropy of the full distribution
    topk_ids: jax.Array | None  # [B, T, K] int32, most likely first
    topk_logp: jax.Array | None  # [B, T, K]
    gathered_logp: jax.Array | None  # [B, T, K'] log-probs at `gather_ids`


def _reshape_rows(x: jax.Array, shape: tuple[int, ...], spec: tuple) -> jax.Array:
    """Reshape with an explicit output sharding spec (required on Explicit-axis meshes)."""
    sharding = jax.typeof(x).sharding
    return jax.lax.reshape(x, shape, out_sharding=sharding.update(spec=P(*spec)))


def _merge_leading(x: jax.Array) -> jax.Array:
    """[B, C, ...] -> [B*C, ...], the sharding of B carried over to the merged axis."""
    spec = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
    return _reshape_rows(x, (x.shape[0] * x.shape[1], *x.shape[2:]), (spec[0], *spec[2 : x.ndim]))


def _split_leading(x: jax.Array, batch: int) -> jax.Array:
    """[B*C, ...] -> [B, C, ...], the merged axis' sharding going to B."""
    spec = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
    shape = (batch, x.shape[0] // batch, *x.shape[1:])
    return _reshape_rows(x, shape, (spec[0], None, *spec[1 : x.ndim]))


def _logits(hidden: jax.Array, lm_head: jax.Array, temperature: float) -> jax.Array:
    """[B, C, D] hidden, [D, V] head -> [B*C, V] logits / temperature, in the head's dtype."""
    # Plain [B*C, D] x [D, V] matmuls: with two contracting axes XLA copies the [B, C, V]
    # cotangent block for the head's gradient.
    return jnp.dot(_merge_leading(hidden).astype(lm_head.dtype), lm_head) / temperature


def _block(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    temperature: float,
    top_k: int,
    with_entropy: bool,
) -> tuple[TokenLogProbs, jax.Array]:
    """[B, C, D] hidden, [D, V] head, [B, C] ids, [B, C, K'] ids -> (outputs, stats [B, C, 2]).

    stats: each row's max logit and log-sum-exp of the shifted logits, from which the backward
    rebuilds the log-softmax bit for bit (as `jax.nn.log_softmax` computes it).
    """
    z = _logits(hidden, lm_head, temperature)
    topk_ids = topk_logp = gathered = None
    if top_k:
        # The top-K of the logits is that of the log-probs, and its pass yields the row max.
        topk_z, topk_ids, peak = top_k_with_max(z, top_k)
        stats = _softmax_stats(z, peak)
        topk_logp = _log_softmax(topk_z, stats)
    else:
        stats = _softmax_stats(z, jnp.max(z, axis=-1, keepdims=True))
    logp_full = _log_softmax(z, stats)
    logp = jnp.take_along_axis(logp_full, _merge_leading(target_ids[..., None]), axis=-1)[:, 0]
    entropy = -jnp.sum(jnp.exp(logp_full) * logp_full, axis=-1) if with_entropy else None
    if gather_ids is not None:
        gathered = jnp.take_along_axis(logp_full, _merge_leading(gather_ids), axis=-1)
    out = TokenLogProbs(logp, entropy, topk_ids, topk_logp, gathered)
    return jax.tree.map(lambda x: _split_leading(x, hidden.shape[0]), (out, stats))


def _softmax_stats(z: jax.Array, peak: jax.Array) -> jax.Array:
    """[N, V] logits, [N, 1] their row max -> [N, 2]: the max and the log-sum-exp of z - max."""
    peak = jax.lax.stop_gradient(peak)
    return jnp.concatenate([peak, jnp.log(jnp.sum(jnp.exp(z - peak), axis=-1, keepdims=True))], -1)


def _log_softmax(z: jax.Array, stats: jax.Array) -> jax.Array:
    """[N, V] (or [N, K] selected) logits and their rows' [N, 2] stats -> log-probs."""
    return (z - stats[:, :1]) - stats[:, 1:]


def _block_backward(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    out: TokenLogProbs,
    stats: jax.Array,
    cotangent: TokenLogProbs,
    temperature: float,
) -> tuple[jax.Array, jax.Array]:
    """One block's gradients (hidden [B, C, D], head [D, V]) from its saved outputs and stats.

    d logp_j / d z = e_j - p for every gathered log-prob, d H / d z = -p (log p + H): the
    backward needs the logits again but neither the log-softmax's reductions nor the top-K.
    """
    merge = lambda x: None if x is None else _merge_leading(x)
    out, cotangent, stats = jax.tree.map(merge, (out, cotangent, stats))
    z, logits_vjp = jax.vjp(lambda h, w: _logits(h, w, temperature), hidden, lm_head)
    logp_full = _log_softmax(z, stats)
    probs = jnp.exp(logp_full)
    ids = [_merge_leading(target_ids[..., None])]
    weights = [cotangent.logp[:, None]]
    if out.topk_ids is not None:
        ids.append(out.topk_ids)
        weights.append(cotangent.topk_logp)
    if gather_ids is not None:
        ids.append(_merge_leading(gather_ids))
        weights.append(cotangent.gathered_logp)
    ids, weights = jnp.concatenate(ids, axis=-1), jnp.concatenate(weights, axis=-1)
    dz = -probs * jnp.sum(weights, axis=-1, keepdims=True)
    if out.entropy is not None:
        dz = dz - cotangent.entropy[:, None] * probs * (logp_full + out.entropy[:, None])
    # The scatter of the gathers' cotangents, as the gather's own transpose (sharding-aware).
    _, gather_vjp = jax.vjp(lambda x: jnp.take_along_axis(x, ids, axis=-1), logp_full)
    dz = dz + gather_vjp(weights.astype(dz.dtype))[0]
    d_hidden, d_head = logits_vjp(dz)
    return d_hidden.astype(hidden.dtype), d_head


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _chunked_logprobs(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    temperature: float,
    top_k: int,
    with_entropy: bool,
) -> TokenLogProbs:
    """[n, B, C, D] hidden blocks, [D, V] head, [n, B, C] ids (+ [n, B, C, K']) -> [n, B, C]."""
    return _chunked_forward(
        hidden, lm_head, target_ids, gather_ids, temperature, top_k, with_entropy
    )[0]


def _chunked_forward(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    temperature: float,
    top_k: int,
    with_entropy: bool,
) -> tuple[TokenLogProbs, tuple]:
    """The blocks in turn; residuals: the inputs, each token's softmax stats and the outputs."""

    def block(args: tuple[jax.Array, jax.Array, jax.Array | None]) -> tuple:
        h, target, gathered_ids = args
        return _block(h, lm_head, target, gathered_ids, temperature, top_k, with_entropy)

    out, stats = jax.lax.map(block, (hidden, target_ids, gather_ids))
    saved = out._replace(logp=None, topk_logp=None, gathered_logp=None)
    return out, (hidden, lm_head, target_ids, gather_ids, saved, stats)


def _chunked_backward(
    temperature: float, top_k: int, with_entropy: bool, residuals: tuple, cotangent: TokenLogProbs
) -> tuple:
    """Block by block: recompute the logits, accumulate the head's gradient in float32."""
    hidden, lm_head, target_ids, gather_ids, saved, stats = residuals
    cotangent = cotangent._replace(topk_ids=None)  # integer output: no cotangent

    def block(d_head: jax.Array, args: tuple) -> tuple[jax.Array, jax.Array]:
        h, target, gathered_ids, out, block_stats, ct = args
        d_h, d_w = _block_backward(
            h, lm_head, target, gathered_ids, out, block_stats, ct, temperature
        )
        return d_head + d_w, d_h

    xs = (hidden, target_ids, gather_ids, saved, stats, cotangent)
    d_head, d_hidden = jax.lax.scan(block, jnp.zeros_like(lm_head), xs)
    return d_hidden, d_head, None, None


_chunked_logprobs.defvjp(_chunked_forward, _chunked_backward)


def _check_args(
    hidden: jax.Array,
    lm_head: jax.Array,
    target_ids: jax.Array,
    gather_ids: jax.Array | None,
    temperature: float,
    top_k: int,
    chunk_size: int | None,
) -> None:
    """Shapes, dtypes and (when concrete) id ranges of `token_logprobs`' arguments."""
    b, t, d = check_rank("hidden", hidden, 3, "[B, T, D]")
    check_floating("hidden", hidden)
    check_shape("lm_head", lm_head, (d, None), "[D, V]", f"with D = {d} of hidden [B, T, D]")
    check_floating("lm_head", lm_head)
    vocab = lm_head.shape[1]
    source = f"the vocabulary of lm_head [D, V = {vocab}]"
    check_shape("target_ids", target_ids, (b, t), "[B, T]", "as hidden [B, T, D]")
    check_ids("target_ids", target_ids, vocab, vocab_from=source)
    if gather_ids is not None:
        check_shape("gather_ids", gather_ids, (b, t, None), "[B, T, K']", "as hidden [B, T, D]")
        check_ids("gather_ids", gather_ids, vocab, vocab_from=source)
    check_value("temperature", temperature, _TEMPERATURE)
    check_value("top_k", top_k, Domain(0, vocab, integer=True, note="(0 = off; V = lm_head's)"))
    if chunk_size is not None:
        check_value("chunk_size", chunk_size, _CHUNK)


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

    `top_k` (static) adds the K most likely ids and their log-probs (XLA does not partition
    `lax.top_k` over a sharded batch: with top_k > 0 each block is gathered across the batch
    shards; the other outputs stay local). `temperature` 0 (greedy sampling) means 1, as the
    sampler records. `chunk_size` is the number of tokens per block: every block spans all B
    sequences and max(1, chunk_size // B) positions of each; `None` computes everything in one
    block (the naive reference: materializes [B, T, V] float32).
    """
    _check_args(hidden, lm_head, target_ids, gather_ids, temperature, top_k, chunk_size)
    temperature = temperature or 1.0
    batch, length, _ = hidden.shape
    ids = target_ids.astype(jnp.int32)
    gather = None if gather_ids is None else gather_ids.astype(jnp.int32)
    # One f32 copy of the head outside the loop: its gradient is then accumulated in f32 across
    # chunks even when the weights are bf16.
    head = lm_head.astype(jnp.promote_types(jnp.result_type(hidden, lm_head), jnp.float32))

    if chunk_size is None or chunk_size >= batch * length:
        # The reference: plain autodiff through one block.
        return _block(hidden, head, ids, gather, temperature, top_k, entropy)[0]
    positions = max(1, chunk_size // batch)
    num_chunks = -(-length // positions)
    pad = num_chunks * positions - length

    def chunked(x: jax.Array) -> jax.Array:
        """[B, T, ...] -> [num_chunks, B, positions, ...]; the ragged end is padded (id 0)."""
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(batch, num_chunks, positions, *x.shape[2:]), 1, 0)

    def unchunked(x: jax.Array) -> jax.Array:
        """[num_chunks, B, positions, ...] -> [B, T, ...] without the padding."""
        x = jnp.moveaxis(x, 0, 1).reshape(batch, num_chunks * positions, *x.shape[3:])
        return x[:, :length]

    stacked = _chunked_logprobs(
        chunked(hidden),
        head,
        chunked(ids),
        None if gather is None else chunked(gather),
        temperature,
        top_k,
        entropy,
    )
    return jax.tree.map(unchunked, stacked)
