"""Attention kernels against the dense reference: forward, gradients, padding, GQA, blocks."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_testing import padded_batch

from trlx_jax.models import ModelConfig, forward, init_cache, init_model, make_mesh
from trlx_jax.models import attention as attn

TOL = 1e-5
B, T, H, KV, D = 3, 37, 4, 2, 8


def _inputs(t: int = T, seed: int = 0):
    """q [B, T, H, D], k/v [B, KV, T, D] ~ N(0, 1); rows: no padding, left, left + right."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, t, H, D)).astype(np.float32)
    k, v = (rng.normal(size=(B, KV, t, D)).astype(np.float32) for _ in range(2))
    valid = np.ones((B, t), bool)
    valid[1, :5] = False
    valid[2, :20] = False
    valid[2, t - 4 :] = False
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid)


def _dense(q, k, v, valid):
    return attn.dense_attention(q, k, v, attn.dense_mask(valid, q.shape[1]))


def _outputs_and_grads(fn, q, k, v, valid):
    """One jit: out, the gradients of sum(out * w) over the real query rows, and over all rows."""
    w = jax.random.normal(jax.random.key(1), q.shape)

    @jax.jit
    def run(q, k, v):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, valid), q, k, v)
        return out, vjp(jnp.where(valid[:, :, None, None], w, 0.0)), vjp(w)

    return run(q, k, v)


@pytest.fixture(scope="module")
def dense_reference():
    q, k, v, valid = _inputs()
    out, grads, _ = _outputs_and_grads(_dense, q, k, v, valid)
    return (q, k, v, valid), out, grads


def _assert_matches_dense(fn, reference):
    # Outputs at padding queries are garbage by contract (it differs between kernels); left
    # padding queries that see no key at all are part of the case.
    (q, k, v, valid), ref, ref_grads = reference
    rows = np.asarray(valid)
    out, grads, all_grads = _outputs_and_grads(fn, q, k, v, valid)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.asarray(out)[rows], np.asarray(ref)[rows], atol=TOL)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, atol=TOL)
    # Cotangents on every row, padding queries included, still give finite gradients.
    assert all(np.isfinite(np.asarray(g)).all() for g in all_grads)


def test_dense_matches_repeated_kv_reference():
    rng = np.random.default_rng(0)
    b, t, s, h, k, d = 2, 3, 5, 6, 2, 4
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    key = rng.normal(size=(b, s, k, d)).astype(np.float32)
    val = rng.normal(size=(b, s, k, d)).astype(np.float32)
    mask = rng.random((b, t, s)) < 0.7
    mask[..., 0] = True
    # The kernels take k/v in the cache layout [B, K, S, Dh]; the reference uses [B, S, K, Dh].
    out = np.asarray(attn.dense_attention(jnp.asarray(q), jnp.asarray(key.transpose(0, 2, 1, 3)),
                                          jnp.asarray(val.transpose(0, 2, 1, 3)), mask))
    kr, vr = np.repeat(key, h // k, axis=2), np.repeat(val, h // k, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, kr) / np.sqrt(d)
    scores = np.where(mask[:, None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bhts,bshd->bthd", p, vr), atol=1e-5)


def test_dense_fully_masked_rows_stay_finite():
    q = jnp.ones((1, 2, 2, 4))
    kv = jnp.ones((1, 1, 3, 4))  # [B, K, S, Dh]
    mask = jnp.array([[[False] * 3, [True, False, False]]])
    assert np.isfinite(np.asarray(attn.dense_attention(q, kv, kv, mask))).all()


def test_blockwise_matches_dense(dense_reference):
    # Block sizes that do not divide T = 37, unequal query and key blocks.
    fn = functools.partial(attn.blockwise_attention, block_q=16, block_kv=5)
    _assert_matches_dense(lambda q, k, v, valid: fn(q, k, v, valid), dense_reference)


def test_blockwise_query_offset_matches_dense():
    # A chunk of 6 queries at slots 9..14 over 16 cached slots (prefill into a cache).
    q, k, v, valid = _inputs(16)
    q = q[:, :6]
    mask = attn.dense_mask(valid, 6, 9)
    rows = np.asarray(valid[:, 9:15])
    ref = attn.dense_attention(q, k, v, mask)
    out = attn.blockwise_attention(q, k, v, valid, jnp.int32(9), block_q=4, block_kv=3)
    np.testing.assert_allclose(np.asarray(out)[rows], np.asarray(ref)[rows], atol=TOL)


def test_blockwise_skips_key_blocks_in_the_causal_future():
    # NaN values in keys 8..15 reach only the queries of blocks that visit them: queries 0..7
    # (the first query block) stay finite, in the forward and in their gradients.
    q, k, v, valid = _inputs(16)
    v = v.at[:, :, 8:].set(jnp.nan)
    fn = functools.partial(attn.blockwise_attention, block_q=8, block_kv=8)
    out, vjp = jax.vjp(lambda q: fn(q, k, v, valid), q)
    assert np.isfinite(np.asarray(out[:, :8])).all()
    assert np.isnan(np.asarray(out[0, 8:])).all()
    (dq,) = vjp(jnp.ones_like(out).at[:, 8:].set(0.0))
    assert np.isfinite(np.asarray(dq[:, :8])).all()


def test_cudnn_wrapping_matches_dense(dense_reference):
    # The row rolling and lengths of the cuDNN path, run through XLA's kernel on the CPU.
    _assert_matches_dense(functools.partial(attn.cudnn_attention, implementation="xla"),
                          dense_reference)


def test_splash_matches_dense_in_interpret_mode(dense_reference):
    _assert_matches_dense(functools.partial(attn.splash_attention, block=128, interpret=True),
                          dense_reference)


def test_resolve_on_cpu():
    config = ModelConfig(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                         attention_block_kv=64)
    assert attn.resolve(config, 64, 64, cached=False) == "dense"
    assert attn.resolve(config, 65, 65, cached=False) == "blockwise"
    assert attn.resolve(config, 500, 500, cached=True) == "dense"
    blockwise = dataclasses.replace(config, attention="blockwise")
    assert attn.resolve(blockwise, 8, 8, cached=False) == "blockwise"
    assert attn.resolve(blockwise, 8, 500, cached=True) == "blockwise"
    assert attn.resolve(blockwise, 1, 500, cached=True) == "dense"
    assert attn.resolve(dataclasses.replace(config, attention="dense"), 900, 900,
                        cached=False) == "dense"
    for name in ("cudnn", "splash"):
        with pytest.raises(ValueError, match=f"model.attention='{name}' needs a"):
            attn.resolve(dataclasses.replace(config, attention=name), 8, 8, cached=False)
    assert not attn.cudnn_available("bfloat16", 2, 1, 64)


def test_config_checks_attention_and_remat_names():
    fields = dict(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8,
                  num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4)
    with pytest.raises(ValueError, match=r"model.attention.*'auto'.*'flash'"):
        ModelConfig(**fields, attention="flash")
    with pytest.raises(ValueError, match=r"model.remat.*'dots_saveable'.*got 'dots'"):
        ModelConfig(**fields, remat="dots")
    with pytest.raises(ValueError, match="attention_block_q"):
        ModelConfig(**fields, attention_block_q=0)
    assert ModelConfig(**fields, remat=True).remat == "full"
    assert ModelConfig(**fields, remat=False).remat == "none"


MODEL = ModelConfig(model_type="qwen3", vocab_size=64, hidden_size=32, intermediate_size=48,
                    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True,
                    init_std=0.3, attention="dense")


@functools.partial(jax.jit, static_argnums=0)
def _model_loss_and_grads(graphdef, state, tokens, positions, mask):
    # A random projection of the real tokens' hidden states (a sum of squares would be flat:
    # the final RMSNorm fixes each row's norm).
    w = jax.random.normal(jax.random.key(2), (*tokens.shape, MODEL.hidden_size))

    def loss(state):
        hidden, _ = forward(graphdef, state, tokens, positions, mask)
        return jnp.sum(jnp.where(mask[..., None], hidden * w, 0.0)), hidden

    return jax.value_and_grad(loss, has_aux=True)(state)


def _with_config(graphdef, state, config):
    model = nnx.merge(graphdef, state)
    model.config = config
    model.layers.config = model.layers.attn.config = config
    return nnx.graphdef(model)


def test_transformer_blockwise_equals_dense_on_a_mesh():
    tokens, mask, positions = padded_batch(MODEL.vocab_size, batch=4, length=21)
    graphdef, state = nnx.split(init_model(MODEL))
    blockwise = _with_config(graphdef, state, dataclasses.replace(
        MODEL, attention="blockwise", attention_block_q=8, attention_block_kv=6))
    with jax.set_mesh(make_mesh((2, 1, 1))):  # rows sharded over "data"
        ((l1, h1), g1), ((l2, h2), g2) = (
            _model_loss_and_grads(g, state, tokens, positions, mask) for g in (graphdef, blockwise))
    np.testing.assert_allclose(np.asarray(h2)[mask], np.asarray(h1)[mask], atol=TOL)
    np.testing.assert_allclose(l2, l1, rtol=TOL)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=TOL * max(1.0, float(np.abs(b).max())))


def test_prefill_with_blockwise_equals_dense():
    # model.attention="blockwise" also runs the sampler's prefill: here a chunk written at
    # cache index 4 (queries at slots 4..10; the empty slots 0..3 are invalid keys).
    tokens, mask, positions = padded_batch(MODEL.vocab_size, batch=3, length=7)
    graphdef, state = nnx.split(init_model(MODEL))
    blockwise = _with_config(graphdef, state, dataclasses.replace(
        MODEL, attention="blockwise", attention_block_q=4, attention_block_kv=3))
    cache = init_cache(MODEL, 3, max_len=16)._replace(index=jnp.int32(4))
    hidden = [jax.jit(forward, static_argnums=0, static_argnames="window")(
        g, state, tokens, positions, mask, cache=cache, window=11)[0]
        for g in (graphdef, blockwise)]
    np.testing.assert_allclose(np.asarray(hidden[1])[mask], np.asarray(hidden[0])[mask],
                               atol=TOL)
