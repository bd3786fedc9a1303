"""Causal GQA attention kernels: dense, blockwise (online softmax), cuDNN flash, Pallas splash.

Every kernel takes queries q [B, T, H, Dh] and keys / values in the cache layout k, v
[B, K, S, Dh] (query head h reads kv head h // (H / K), as HF's `repeat_kv`) and returns
[B, T, H, Dh] in v's dtype; logits and softmax statistics are float32. Who sees whom: query t
sits at slot `q_offset + t`, key s at slot s, and key s is visible to query t iff
`key_valid[b, s]` and `s <= q_offset + t` (left padding is a run of invalid leading slots;
RoPE positions are separate). A query that sees no key (a left-padding row) gets finite
garbage that callers mask out; which garbage differs between kernels.

    dense      float32 scores [B, H, T, S] at once (any [B, T, S] mask); the reference
    blockwise  pure JAX: query x key blocks with an online softmax; key blocks wholly in the
               causal future are skipped; a custom VJP recomputes each block's scores from
               the saved row max and sum (FlashAttention-2), so memory is linear in T
    cudnn      `jax.nn.dot_product_attention(implementation="cudnn")`: GPU, bf16 / fp16
    splash     the Pallas splash-attention kernel: TPU

cudnn and splash serve self-attention of a whole sequence (q_offset 0, T = S). cudnn takes
padding as lengths: each row is rolled left by its leading padding, so it assumes the
trainer's row layout [left padding | real tokens | right padding] (no holes between real
tokens); splash marks padding with segment ids and is exact for any mask.

`resolve` picks the kernel for a call from the config key `attention`: "auto" is dense when
all keys fit in one key block (`attention_block_kv`; blockwise would do the same work with
loop overhead), else cudnn on a GPU where it works for the config's dtype and head dim,
splash on a TPU and blockwise elsewhere. The sampler's cached calls (prefill, decode) stay
dense unless `attention` is "blockwise", which then also runs prefill blockwise.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from trlx_jax.models.config import ModelConfig
from trlx_jax.models.sharding import activation_spec

logger = logging.getLogger(__name__)

# Finite "minus infinity" for masked logits: rows with no visible key (padding queries) then
# get a uniform distribution instead of NaNs, in every kernel's forward and backward.
_MASKED = float(jnp.finfo(jnp.float32).min)
# Remat policy names (`ModelConfig.remat`) of the saved attention output and its statistics.
OUT_NAME, STATS_NAME = "attention_out", "attention_stats"
_SPLASH_LANES = 128


class AttentionMask(NamedTuple):
    """key_valid [B, S] bool; q_offset [] int32, the slot of query 0; dense [B, T, S] or None."""

    key_valid: jax.Array
    q_offset: jax.Array | int = 0
    dense: jax.Array | None = None


def dense_mask(key_valid: jax.Array, q_len: int, q_offset: jax.Array | int = 0) -> jax.Array:
    """The visibility of `AttentionMask` materialized: [B, S], T -> bool [B, T, S]."""
    query_slot = q_offset + jnp.arange(q_len)
    key_slot = jnp.arange(key_valid.shape[1])
    return key_valid[:, None, :] & (key_slot[None, None, :] <= query_slot[None, :, None])


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked GQA: q [B, T, H, Dh], k/v [B, K, S, Dh], mask [B, T, S] -> [B, T, H, Dh]."""
    b, t, h, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None], scores * (d**-0.5), _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    # Contracting into [b, k, g, t, d] first keeps the dot in the batched-matmul layout that
    # XLA:CPU runs fast; the transpose then touches only the small output.
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, h, d)


# -- blockwise ------------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _block_scores(
    qi: jax.Array, kj: jax.Array, valid_j: jax.Array, q_slot: jax.Array, k_slot: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Scaled masked logits of a block, [B, K, M, bk] float32, and its visibility."""
    s = jnp.einsum("bkmd,bksd->bkms", qi, kj, preferred_element_type=jnp.float32)
    visible = valid_j[:, None, None, :] & (k_slot[None, :] <= q_slot[:, None])
    return jnp.where(visible, s * (qi.shape[-1] ** -0.5), _MASKED), visible


def _slice(x: jax.Array, start: jax.Array, size: int, axis: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


# Inside the kernel a query row is (token, group): q [B, K, Tp * G, D], row r holding token
# r // G of query head group r % G, so that a query block is a contiguous [B, K, bq * G, D]
# slice and every dot is a plain batched matmul over (B, K) (5-D dots compile and run slower
# on XLA:CPU).


def _flash_forward(
    q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, offset: jax.Array,
    bq: int, bk: int, g: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q [B, K, Tp*G, D], k/v [B, K, Sp, D] -> (out like q, row max, row sum [B, K, Tp*G])."""
    b, kv_heads, rows, d = q.shape
    nk, rq, f32 = k.shape[2] // bk, bq * g, jnp.float32

    def q_block(i: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        qi = _slice(q, i * rq, rq, 2)
        q_slot = offset + i * bq + jnp.arange(rq) // g

        def kv_block(j: jax.Array, carry: tuple) -> tuple:
            m, rsum, acc = carry
            s, _ = _block_scores(qi, _slice(k, j * bk, bk, 2), _slice(valid, j * bk, bk, 1),
                                 q_slot, j * bk + jnp.arange(bk))
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            correction = jnp.exp(m - m_new)
            pv = jnp.einsum("bkms,bksd->bkmd", p.astype(v.dtype), _slice(v, j * bk, bk, 2),
                            preferred_element_type=f32)
            return m_new, rsum * correction + p.sum(-1), acc * correction[..., None] + pv

        # Key blocks past the block's last query slot are invisible to all of its queries.
        n_kv = jnp.minimum(nk, (offset + (i + 1) * bq - 1) // bk + 1)
        init = (jnp.full((b, kv_heads, rq), _MASKED, f32), jnp.zeros((b, kv_heads, rq), f32),
                jnp.zeros((b, kv_heads, rq, d), f32))
        m, rsum, acc = jax.lax.fori_loop(0, n_kv, kv_block, init)
        return (acc / rsum[..., None]).astype(v.dtype), m, rsum

    out, m, rsum = jax.lax.map(q_block, jnp.arange(rows // rq))
    out = jnp.moveaxis(out, 0, 2).reshape(b, kv_heads, rows, d)
    m, rsum = (jnp.moveaxis(x, 0, 2).reshape(b, kv_heads, rows) for x in (m, rsum))
    return out, m, rsum


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _flash(q, k, v, valid, offset, bq, bk, g):
    return _flash_forward(q, k, v, valid, offset, bq, bk, g)[0]


def _flash_fwd(q, k, v, valid, offset, bq, bk, g):
    out, m, rsum = _flash_forward(q, k, v, valid, offset, bq, bk, g)
    out = checkpoint_name(out, OUT_NAME)
    m, rsum = checkpoint_name(m, STATS_NAME), checkpoint_name(rsum, STATS_NAME)
    return out, (q, k, v, valid, offset, out, m, rsum)


def _flash_bwd(bq, bk, g, residuals, dout):
    q, k, v, valid, offset, out, m, rsum = residuals
    b, kv_heads, rows, d = q.shape
    rq, nk, f32 = bq * g, k.shape[2] // bk, jnp.float32
    inv_l = 1.0 / rsum
    delta = jnp.sum(dout.astype(f32) * out.astype(f32), axis=-1)

    def kv_block(dq: jax.Array, j: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        kj, vj = _slice(k, j * bk, bk, 2), _slice(v, j * bk, bk, 2)
        valid_j, k_slot = _slice(valid, j * bk, bk, 1), j * bk + jnp.arange(bk)

        def q_block(i: jax.Array, carry: tuple) -> tuple:
            dq, dk, dv = carry
            qi, doi = _slice(q, i * rq, rq, 2), _slice(dout, i * rq, rq, 2)
            q_slot = offset + i * bq + jnp.arange(rq) // g
            s, visible = _block_scores(qi, kj, valid_j, q_slot, k_slot)
            # The forward's probabilities, also on rows that see no key (uniform there).
            p = jnp.exp(s - _slice(m, i * rq, rq, 2)[..., None]) * _slice(
                inv_l, i * rq, rq, 2)[..., None]
            dv = dv + jnp.einsum("bkms,bkmd->bksd", p.astype(doi.dtype), doi,
                                 preferred_element_type=f32)
            dp = jnp.einsum("bkmd,bksd->bkms", doi, vj, preferred_element_type=f32)
            ds = jnp.where(visible, p * (dp - _slice(delta, i * rq, rq, 2)[..., None]), 0.0)
            ds = (ds * (d**-0.5)).astype(q.dtype)
            dq_i = _slice(dq, i * rq, rq, 2) + jnp.einsum(
                "bkms,bksd->bkmd", ds, kj, preferred_element_type=f32)
            dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_i, i * rq, axis=2)
            dk = dk + jnp.einsum("bkms,bkmd->bksd", ds, qi, preferred_element_type=f32)
            return dq, dk, dv

        # The first query block whose last slot reaches this key block (as in the forward).
        first = jnp.maximum(0, (j * bk - offset) // bq)
        zeros = jnp.zeros((b, kv_heads, bk, d), f32)
        dq, dk, dv = jax.lax.fori_loop(first, rows // rq, q_block, (dq, zeros, zeros))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(kv_block, jnp.zeros(q.shape, f32), jnp.arange(nk))
    dk, dv = (jnp.moveaxis(x, 0, 2).reshape(b, kv_heads, nk * bk, d) for x in (dk, dv))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def blockwise_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array,
    q_offset: jax.Array | int = 0, *, block_q: int = 512, block_kv: int = 512,
) -> jax.Array:
    """q [B, T, H, Dh], k/v [B, K, S, Dh], key_valid [B, S] -> [B, T, H, Dh], O(T) memory.

    Blocks of `block_q` queries (x their G = H / K heads) x `block_kv` keys, each capped at
    T / S; lengths that the blocks do not divide are padded with invalid keys and discarded
    queries.
    """
    b, t, h, d = q.shape
    kv_heads, s = k.shape[1], k.shape[2]
    g = h // kv_heads
    bq, bk = min(block_q, t), min(block_kv, s)
    tp, sp = _round_up(t, bq), _round_up(s, bk)
    qg = q.reshape(b, t, kv_heads, g, d).transpose(0, 2, 1, 3, 4)
    qg = jnp.pad(qg, ((0, 0), (0, 0), (0, tp - t), (0, 0), (0, 0))).reshape(b, kv_heads, tp * g, d)
    k, v = (jnp.pad(x, ((0, 0), (0, 0), (0, sp - s), (0, 0))) for x in (k, v))
    valid = jnp.pad(key_valid.astype(jnp.bool_), ((0, 0), (0, sp - s)))
    out = _flash(qg, k, v, valid, jnp.asarray(q_offset, jnp.int32), bq, bk, g)
    out = out.reshape(b, kv_heads, tp, g, d)[:, :, :t]
    return out.transpose(0, 2, 1, 3, 4).reshape(b, t, h, d)


# -- cuDNN (GPU) ----------------------------------------------------------------------------


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array,
    *, implementation: str = "cudnn",
) -> jax.Array:
    """Self-attention q [B, T, H, Dh], k/v [B, K, T, Dh], key_valid [B, T] -> [B, T, H, Dh].

    Rows are rolled left by their leading padding so that padding becomes lengths: every
    query sees the real keys up to itself, right-padding queries included (see the module
    docstring for the row layout this assumes). `implementation="xla"` runs the same
    wrapping through XLA's reference kernel (any device; quadratic memory), for tests.
    """
    b, t, h, d = q.shape
    if k.shape[2] != t:
        raise ValueError(f"cudnn attention is self-attention: {t} queries vs {k.shape[2]} keys")
    lead = jnp.argmax(key_valid, axis=1).astype(jnp.int32)
    end = t - jnp.argmax(key_valid[:, ::-1], axis=1).astype(jnp.int32)  # past the last real
    cols = jnp.arange(t)[None, :]

    def roll(x: jax.Array, shift: jax.Array) -> jax.Array:
        """[B, T, N, D] with row b read from column (t + shift[b]) mod T."""
        index = (cols + shift[:, None]) % t
        return jnp.take_along_axis(x, index[:, :, None, None], axis=1)

    keys, values = (roll(x.transpose(0, 2, 1, 3), lead) for x in (k, v))
    out = jax.nn.dot_product_attention(
        roll(q, lead), keys, values, is_causal=True, query_seq_lengths=t - lead,
        key_value_seq_lengths=end - lead, implementation=implementation,
    )
    return roll(out, -lead)


@functools.cache
def cudnn_available(dtype: str, heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether cuDNN flash attention traces for these shapes here (a GPU with cuDNN)."""
    q = jax.ShapeDtypeStruct((1, 128, heads, head_dim), jnp.dtype(dtype))
    k = jax.ShapeDtypeStruct((1, kv_heads, 128, head_dim), jnp.dtype(dtype))
    valid = jax.ShapeDtypeStruct((1, 128), jnp.bool_)
    try:
        jax.eval_shape(cudnn_attention, q, k, k, valid)
    except Exception as e:  # any refusal (no GPU, no cuDNN, an unsupported shape) means no
        logger.info("cuDNN attention unavailable (%s: %s); using blockwise", type(e).__name__, e)
        return False
    return True


# -- splash (TPU) ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _splash_kernel(length: int, heads: int, block: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    mask = sa.MultiHeadMask([sa.CausalMask((length, length))] * heads)
    sizes = sa.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block,
    )
    # Concrete mask metadata, even when first built inside a trace: the kernel is cached.
    with jax.ensure_compile_time_eval():
        return sa.make_splash_mqa_single_device(
            mask, block_sizes=sizes, residual_checkpoint_name=STATS_NAME, interpret=interpret)


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array,
    *, block: int = 512, interpret: bool = False,
) -> jax.Array:
    """Self-attention q [B, T, H, Dh], k/v [B, K, T, Dh], key_valid [B, T] -> [B, T, H, Dh].

    One MQA splash kernel per (row, kv head) over its G query heads; padding has segment id
    0 and real tokens 1, so padding never meets real tokens. T is padded to a multiple of the
    block (`block` rounded down to a multiple of 128, capped at T rounded up). Under a mesh
    the kernel runs per shard (shard_map, rows over the batch rule, kv heads over theirs).
    `interpret=True` runs the Pallas interpreter (any device, slow), for tests.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, d = q.shape
    kv_heads = k.shape[1]
    if k.shape[2] != t:
        raise ValueError(f"splash attention is self-attention: {t} queries vs {k.shape[2]} keys")
    size = min(max(_SPLASH_LANES, block // _SPLASH_LANES * _SPLASH_LANES),
               _round_up(t, _SPLASH_LANES))
    tp = _round_up(t, size)
    kernel = _splash_kernel(tp, h // kv_heads, size, interpret)
    # The kernel does not scale the logits.
    qg = (q * (d**-0.5)).astype(q.dtype).reshape(b, t, kv_heads, h // kv_heads, d)
    qg = jnp.pad(qg.transpose(0, 2, 3, 1, 4), ((0, 0), (0, 0), (0, 0), (0, tp - t), (0, 0)))
    k, v = (jnp.pad(x, ((0, 0), (0, 0), (0, tp - t), (0, 0))) for x in (k, v))
    segments = jnp.pad(key_valid.astype(jnp.int32), ((0, 0), (0, tp - t)))

    def per_shard(qg, k, v, segments):
        def row(qr, kr, vr, seg):
            ids = sa.SegmentIds(q=seg, kv=seg)
            return jax.vmap(lambda qh, kh, vh: kernel(qh, kh, vh, segment_ids=ids))(qr, kr, vr)

        return jax.vmap(row)(qg, k, v, segments)

    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        spec_q = activation_spec(qg.shape, ("batch", "kv_heads", None, None, None))
        spec_k = activation_spec(k.shape, ("batch", "kv_heads", None, None))
        spec_s = activation_spec(segments.shape, ("batch", None))
        per_shard = jax.shard_map(per_shard, in_specs=(spec_q, spec_k, spec_k, spec_s),
                                  out_specs=spec_q, check_vma=False)
    out = per_shard(qg, k, v, segments)
    return out[:, :, :, :t].transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


# -- selection ------------------------------------------------------------------------------


def resolve(config: ModelConfig, q_len: int, kv_len: int, *, cached: bool) -> str:
    """The kernel for one call: "dense", "blockwise", "cudnn" or "splash" (module docstring)."""
    name = config.attention
    if cached:
        return "blockwise" if name == "blockwise" and q_len > 1 else "dense"
    platform = jax.default_backend()
    if name == "cudnn" and platform != "gpu":
        raise ValueError(f"model.attention='cudnn' needs a GPU (this backend is {platform!r}); "
                         "use 'auto' or 'blockwise'")
    if name == "splash" and platform != "tpu":
        raise ValueError(f"model.attention='splash' needs a TPU (this backend is {platform!r}); "
                         "use 'auto' or 'blockwise'")
    if name != "auto":
        return name
    if kv_len <= config.attention_block_kv:
        return "dense"
    if platform == "gpu" and cudnn_available(
        config.dtype, config.num_heads, config.num_kv_heads, config.head_dim
    ):
        return "cudnn"
    return "splash" if platform == "tpu" else "blockwise"


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, impl: str, config: ModelConfig
) -> jax.Array:
    """`impl` (from `resolve`) on q [B, T, H, Dh], k/v [B, K, S, Dh] -> [B, T, H, Dh]."""
    if impl == "dense":
        return dense_attention(q, k, v, mask.dense)
    if impl == "blockwise":
        return blockwise_attention(q, k, v, mask.key_valid, mask.q_offset,
                                   block_q=config.attention_block_q,
                                   block_kv=config.attention_block_kv)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, mask.key_valid)
    if impl == "splash":
        return splash_attention(q, k, v, mask.key_valid,
                                block=min(config.attention_block_q, config.attention_block_kv))
    raise ValueError(f"unknown attention kernel {impl!r}")
