"""`generate`: batched KV-cache sampling that records behaviour log-probs and top-K per token.

One compiled program per (batch, prompt bucket, generation bucket, sampling params): a prefill
forward over the left-padded prompts fills the cache, then `lax.while_loop`s decode one token
per step and exit as soon as every row has stopped (up to four loops in sequence, each
attending only to the cache slots written so far: `decode_segments`). The weights are traced
arguments (new weights never recompile), and the cache lives inside the program, so XLA
updates it in place across the loops (the strongest form of donation: it never leaves the
device or gets copied).

Prompt lengths are bucketed (left-padded up to the bucket), and so is the generation buffer;
`max_new_tokens` itself is a traced loop bound, so varying prompt lengths or generation lengths
within a bucket reuse the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from trlx_jax.checks import (
    ArgumentError,
    Domain,
    check_bool_like,
    check_id,
    check_id_sequence,
    check_ids,
    check_rank,
    check_shape,
    check_value,
    shape_of,
)
from trlx_jax.models.cache import init_cache, next_positions
from trlx_jax.models.config import ModelConfig
from trlx_jax.models.sharding import constrain
from trlx_jax.models.transformer import Transformer, forward, positions_from_mask
from trlx_jax.rollout.sampling import SamplingParams, select_tokens

FINISH_LENGTH = 0  # reached max_new_tokens
FINISH_STOP = 1  # emitted a stop token (kept as the last response token)

_MIN_BUCKET = 16
_LINEAR_BUCKET = 256


def bucket_length(n: int) -> int:
    """The padded length for n tokens: powers of two from 16 up to 256, then multiples of 256."""
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    if n <= _LINEAR_BUCKET:
        return 1 << (n - 1).bit_length()
    return -(-n // _LINEAR_BUCKET) * _LINEAR_BUCKET


def decode_segments(length: int) -> list[int]:
    """Exclusive step bounds of the decode segments for a generation buffer of `length` steps.

    Up to 4 equal segments of at least 64 steps: each gets its own compiled loop whose attention
    reads only the cache slots written so far, which cuts the attention's reads by up to ~35%
    (a window of p + end slots instead of p + length) at the price of compiling up to four
    copies of the decode step.
    """
    size = max(64, -(-length // 4))
    return list(range(size, length, size)) + [length]


class Rollout(NamedTuple):
    """Completions of N = B * num_samples rows (row r answers prompt r // num_samples).

    tokens [N, L] int32 (pad_id after the end); response_mask [N, L] bool (True on generated
    tokens, the stop token included); lengths [N] int32; finish_reason [N] int32 (FINISH_*);
    logp [N, L] float32, the behaviour log-prob of each sampled token; topk_ids [N, L, K] int32
    and topk_logp [N, L, K] float32 (None when record_top_k = 0); prompt_tokens and prompt_mask
    [N, P] the left-padded prompts, repeated per sample; prompt_index [N] int32; `sampling`
    the SamplingParams they were drawn with (a static pytree node: tree maps skip it), so a
    trainer recomputes log-probs at the same temperature and K.
    Recorded values follow `sampling.py`: temperature applied, no top-p/top-k truncation.
    """

    tokens: jax.Array
    response_mask: jax.Array
    lengths: jax.Array
    finish_reason: jax.Array
    logp: jax.Array
    topk_ids: jax.Array | None
    topk_logp: jax.Array | None
    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    prompt_index: jax.Array
    sampling: SamplingParams


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything that selects a compiled program (hashable, passed as a static argument)."""

    graphdef: nnx.GraphDef
    config: ModelConfig
    sampling: SamplingParams
    gen_buffer: int
    stop_ids: tuple[int, ...]
    pad_id: int
    num_samples: int


def _lm_logits(
    graphdef: nnx.GraphDef, state: nnx.State, hidden: jax.Array, vocab_major: bool
) -> jax.Array:
    """hidden [N, D] -> float32 logits [N, V], or [V, N] (see `select_tokens`' vocab_major).

    Same math as `Transformer.logits` (compute-dtype matmul, float32 accumulation); the [N, V]
    case calls it as is (the same product written as a 2-D einsum ran 40% slower at N = 1).
    """
    model = nnx.merge(graphdef, state)
    if not vocab_major:
        return model.logits(hidden[:, None])[:, 0]
    head = model.lm_head_weight().astype(hidden.dtype)
    return jnp.einsum("dv,nd->vn", head, hidden, preferred_element_type=jnp.float32)


# Row count from which the decode loop keeps its logits vocabulary-first (measured on a CPU:
# slower for one row, equal at 4, faster from 8).
_VOCAB_MAJOR_ROWS = 8


@functools.partial(jax.jit, static_argnums=0)
def _generate(
    static: _Static,
    state: nnx.State,
    tokens: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    max_new_tokens: jax.Array,
) -> tuple[jax.Array, ...]:
    """The compiled prefill + decode loop over bucket-padded prompts [B, P], repeated
    num_samples times inside (so global arrays of several processes need no host copy);
    returns the per-token buffers of length gen_buffer and the repeated prompts."""
    graphdef, sampling, config = static.graphdef, static.sampling, static.config
    tokens = constrain(jnp.repeat(tokens, static.num_samples, axis=0), ("batch", "seq"))
    mask = constrain(jnp.repeat(mask, static.num_samples, axis=0), ("batch", "seq"))
    n, p = tokens.shape
    length = static.gen_buffer
    cache = init_cache(config, n, p + length)
    # The prompt fills slots [0, p): prefill attends to those only.
    hidden, cache = forward(graphdef, state, tokens, positions_from_mask(mask), mask, cache,
                            window=p)
    vocab_major = n >= _VOCAB_MAJOR_ROWS
    logits = _lm_logits(graphdef, state, hidden[:, -1], vocab_major)

    k = min(sampling.record_top_k, config.vocab_size)
    out_tokens = jnp.full((n, length), static.pad_id, jnp.int32)
    out_logp = jnp.zeros((n, length), jnp.float32)
    out_topk_ids = jnp.zeros((n, length, k), jnp.int32)
    out_topk_logp = jnp.zeros((n, length, k), jnp.float32)
    stop_ids = jnp.asarray(static.stop_ids or (-1,), jnp.int32)

    def segment_cond(end: int):
        def cond(carry):
            step, done = carry[0], carry[3]
            return (step < jnp.minimum(max_new_tokens, end)) & ~jnp.all(done)

        return cond

    def body(carry, window):
        step, cache, logits, done, lengths, stopped, buffers = carry
        sampled, logp, topk_ids, topk_logp = select_tokens(
            jax.random.fold_in(key, step), logits, sampling, vocab_major=vocab_major
        )
        live = ~done
        sampled = jnp.where(live, sampled, static.pad_id)
        toks, lps, tk_ids, tk_lps = buffers
        toks = toks.at[:, step].set(sampled)
        lps = lps.at[:, step].set(jnp.where(live, logp, 0.0))
        if k:
            tk_ids = tk_ids.at[:, step].set(jnp.where(live[:, None], topk_ids, 0))
            tk_lps = tk_lps.at[:, step].set(jnp.where(live[:, None], topk_logp, 0.0))
        hit_stop = live & jnp.isin(sampled, stop_ids)
        lengths = lengths + live.astype(jnp.int32)
        hidden, cache = forward(
            graphdef, state, sampled[:, None], next_positions(cache)[:, None], live[:, None],
            cache, window=window,
        )
        logits = _lm_logits(graphdef, state, hidden[:, 0], vocab_major)
        return (step + 1, cache, logits, done | hit_stop, lengths, stopped | hit_stop,
                (toks, lps, tk_ids, tk_lps))

    zeros = jnp.zeros((n,), jnp.bool_)
    carry = (jnp.zeros((), jnp.int32), cache, logits, zeros, jnp.zeros((n,), jnp.int32), zeros,
             (out_tokens, out_logp, out_topk_ids, out_topk_logp))
    # Step s writes slot p + s and attends to slots <= p + s, so steps [start, end) need a window
    # of p + end slots: each segment reads only the part of the cache written so far.
    for end in decode_segments(length):
        carry = jax.lax.while_loop(
            segment_cond(end), functools.partial(body, window=p + end), carry
        )
    _, _, _, _, lengths, stopped, buffers = carry
    return (lengths, stopped, *buffers, tokens, mask)


@jax.jit
def _prompt_flags(tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(every row has a real token, every row is left-padded) of a global prompt batch."""
    return mask.any(axis=1).all(), ~(mask[:, :-1] & ~mask[:, 1:]).any()


def _check_prompts(tokens: jax.Array | np.ndarray, mask: jax.Array | np.ndarray) -> None:
    """Shape and padding checks on the host (on device for arrays spanning processes)."""
    if tokens.ndim != 2 or tokens.shape != mask.shape:
        raise ValueError(
            f"prompt_tokens {tokens.shape} and prompt_mask {mask.shape} must both "
            "be [batch, prompt_len]"
        )
    if isinstance(mask, jax.Array) and not mask.is_fully_addressable:
        has_token, left_padded = (bool(f) for f in _prompt_flags(tokens, mask))
    else:
        mask = np.asarray(mask, bool)
        has_token = bool(mask.any(axis=1).all())
        left_padded = not (mask[:, :-1] & ~mask[:, 1:]).any()
    if not has_token:
        raise ValueError("every prompt needs at least one real token (a row of prompt_mask is "
                         "all False)")
    if not left_padded:
        raise ValueError("prompts must be LEFT-padded: a real token is followed by padding")


def _check_args(
    prompt_tokens: jax.Array | np.ndarray, prompt_mask: jax.Array | np.ndarray, key: jax.Array,
    max_new_tokens: int, num_samples: int, sampling: SamplingParams, stop_ids: Sequence[int],
    pad_id: int, vocab: int,
) -> tuple[int, ...]:
    """Host-side checks of `generate`'s arguments (prompt ids where concrete); the stop ids."""
    check_value("max_new_tokens", max_new_tokens, Domain(1, integer=True))
    check_value("num_samples", num_samples, Domain(1, integer=True))
    if not isinstance(sampling, SamplingParams):
        raise ArgumentError(f"sampling must be a SamplingParams, got {type(sampling).__name__}")
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == ()) and not (
            not typed and dtype == np.uint32 and key.shape == (2,)):
        raise ArgumentError(f"key must be one PRNG key (jax.random.key(seed)), got {key!r}")
    source = f"the model's vocabulary of {vocab} tokens"
    check_id("pad_id", pad_id, vocab, source)
    stops = check_id_sequence("stop_ids", stop_ids, vocab, source)
    check_rank("prompt_tokens", prompt_tokens, 2, "[batch, prompt_len]")
    check_shape("prompt_mask", prompt_mask, shape_of(prompt_tokens), "[batch, prompt_len]",
                "as prompt_tokens")
    check_bool_like("prompt_mask", prompt_mask)
    check_ids("prompt_tokens", prompt_tokens, vocab, where=prompt_mask, vocab_from=source)
    return stops


def generate(
    model: Transformer | tuple[nnx.GraphDef, nnx.State],
    prompt_tokens: jax.Array | np.ndarray,
    prompt_mask: jax.Array | np.ndarray,
    *,
    key: jax.Array,
    max_new_tokens: int,
    num_samples: int = 1,
    sampling: SamplingParams | None = None,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
) -> Rollout:
    """Samples `num_samples` completions per left-padded prompt [B, P] (mask True on tokens).

    `model` is a Transformer or its `nnx.split` (graphdef, state); with sharded parameters, call
    it inside `jax.set_mesh(mesh)` and the batch is sharded over ("data", "fsdp").
    `sampling` defaults to `SamplingParams()` (temperature 1, no truncation, no top-K record).
    """
    sampling = SamplingParams() if sampling is None else sampling
    graphdef, state = nnx.split(model) if isinstance(model, nnx.Module) else model
    config = nnx.merge(graphdef, state).config
    stop_ids = _check_args(prompt_tokens, prompt_mask, key, max_new_tokens, num_samples,
                           sampling, stop_ids, pad_id, config.vocab_size)
    # Arrays spanning several processes stay on device (padded there); the rest pad on host.
    xp = jnp
    if not isinstance(prompt_tokens, jax.Array) or prompt_tokens.is_fully_addressable:
        prompt_mask = np.asarray(prompt_mask, bool)
        # Padding may hold any value (e.g. -1); it reads pad_id's embedding instead.
        prompt_tokens = np.where(prompt_mask, np.asarray(prompt_tokens), pad_id).astype(np.int32)
        xp = np
    _check_prompts(prompt_tokens, prompt_mask)
    b, p = prompt_tokens.shape
    pad = bucket_length(p) - p
    tokens = xp.pad(prompt_tokens, ((0, 0), (pad, 0)), constant_values=pad_id)
    mask = xp.pad(prompt_mask, ((0, 0), (pad, 0)))
    static = _Static(graphdef, config, sampling, bucket_length(max_new_tokens),
                     stop_ids, int(pad_id), num_samples)
    (lengths, stopped, out_tokens, out_logp, topk_ids, topk_logp, tokens,
     mask) = _generate(static, state, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, bool),
                       key, jnp.int32(max_new_tokens))
    recorded = sampling.record_top_k > 0
    return Rollout(
        tokens=out_tokens[:, :max_new_tokens],
        response_mask=jnp.arange(max_new_tokens)[None, :] < lengths[:, None],
        lengths=lengths,
        finish_reason=jnp.where(stopped, FINISH_STOP, FINISH_LENGTH).astype(jnp.int32),
        logp=out_logp[:, :max_new_tokens],
        topk_ids=topk_ids[:, :max_new_tokens] if recorded else None,
        topk_logp=topk_logp[:, :max_new_tokens] if recorded else None,
        prompt_tokens=tokens[:, pad:],
        prompt_mask=mask[:, pad:],
        prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_samples),
        sampling=sampling,
    )
