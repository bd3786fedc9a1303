"""The Transformer module: padding, KV-cache decode, pure form, remat, dtypes, LM head."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_testing import padded_batch

from trlx_jax.models import (
    ModelConfig,
    Transformer,
    forward,
    init_cache,
    init_model,
    next_positions,
    positions_from_mask,
)
from trlx_jax.models.config import REMAT_POLICIES
from trlx_jax.models.transformer import REMAT

# Exercises every optional path: q/k norm, q/k/v/o and MLP biases, GQA, head_dim != D / H.
CONFIG = ModelConfig(
    model_type="qwen3",
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=12,
    qkv_bias=True,
    o_bias=True,
    mlp_bias=True,
    qk_norm=True,
    init_std=0.3,
)
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return init_model(CONFIG, seed=0)


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(graphdef, state, tokens, positions, mask):
    return forward(graphdef, state, tokens, positions, mask)


def _run(model, tokens, mask, positions):
    """Jitted full forward (eager op-by-op dispatch is slow on CPU)."""
    return _jit_forward(*nnx.split(model), tokens, positions, mask)


def test_positions_from_mask():
    mask = jnp.array([[True, True, True], [False, True, True], [False, False, True]])
    np.testing.assert_array_equal(positions_from_mask(mask), [[0, 1, 2], [0, 0, 1], [0, 0, 0]])


def test_left_padding_does_not_change_real_tokens(model):
    tokens, mask, positions = padded_batch(CONFIG.vocab_size, batch=3, length=12)
    hidden, cache = _run(model, tokens, mask, positions)
    assert hidden.shape == (3, 12, CONFIG.hidden_size) and cache is None
    for row in (1, 2):
        real = mask[row]
        alone, _ = _run(
            model,
            tokens[row : row + 1, real],
            mask[row : row + 1, real],
            positions[row : row + 1, real],
        )
        np.testing.assert_allclose(hidden[row, real], alone[0], atol=TOL)


def test_causality(model):
    tokens, mask, positions = padded_batch(CONFIG.vocab_size, batch=2, length=10)
    hidden, _ = _run(model, tokens, mask, positions)
    changed = tokens.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % CONFIG.vocab_size
    hidden2, _ = _run(model, changed, mask, positions)
    # Padding rows see no key and carry garbage by design: compare real tokens only.
    before = mask[:, :7]
    np.testing.assert_allclose(hidden[:, :7][before], hidden2[:, :7][before], atol=TOL)
    assert np.abs(np.asarray(hidden[:, 7:] - hidden2[:, 7:])).max() > 1e-2


@pytest.mark.parametrize("steps", [(1, 1, 1, 1, 1), (2, 1, 2)])
def test_prefill_then_decode_equals_full_forward(model, steps):
    batch, prompt, extra = 3, 7, sum(steps)
    tokens, mask, positions = padded_batch(CONFIG.vocab_size, batch=batch, length=prompt + extra)
    full, _ = _run(model, tokens, mask, positions)
    graphdef, state = nnx.split(model)
    step = jax.jit(forward, static_argnums=0, donate_argnames="cache")
    cache = init_cache(CONFIG, batch, max_len=prompt + extra + 2)
    sl = slice(0, prompt)
    hidden, cache = step(graphdef, state, tokens[:, sl], positions[:, sl], mask[:, sl], cache=cache)
    outs = [hidden]
    start = prompt
    for t in steps:
        sl = slice(start, start + t)
        hidden, cache = step(
            graphdef, state, tokens[:, sl], positions[:, sl], mask[:, sl], cache=cache
        )
        outs.append(hidden)
        start += t
    decoded = np.concatenate([np.asarray(h) for h in outs], axis=1)
    np.testing.assert_allclose(decoded[mask], np.asarray(full)[mask], atol=TOL)
    assert int(cache.index) == prompt + extra
    np.testing.assert_array_equal(cache.mask[:, : prompt + extra], mask)
    assert not np.asarray(cache.mask[:, prompt + extra :]).any()
    np.testing.assert_array_equal(next_positions(cache), positions[:, -1] + 1)


def test_attention_window_reads_only_the_written_slots(model):
    # Prefill with window = prompt and decode steps with window = written slots give the same
    # hidden states and cache as attending over the whole (mostly empty) cache.
    batch, prompt, extra = 3, 7, 3
    tokens, mask, positions = padded_batch(CONFIG.vocab_size, batch=batch, length=prompt + extra)
    graphdef, state = nnx.split(model)
    step = jax.jit(forward, static_argnums=0, static_argnames="window")
    results = {}
    for windowed in (False, True):
        cache = init_cache(CONFIG, batch, max_len=prompt + extra + 6)
        sl = slice(0, prompt)
        hidden, cache = step(graphdef, state, tokens[:, sl], positions[:, sl], mask[:, sl],
                             cache=cache, window=prompt if windowed else None)
        outs = [hidden]
        for t in range(prompt, prompt + extra):
            sl = slice(t, t + 1)
            hidden, cache = step(graphdef, state, tokens[:, sl], positions[:, sl], mask[:, sl],
                                 cache=cache, window=t + 1 if windowed else None)
            outs.append(hidden)
        results[windowed] = (np.concatenate([np.asarray(h) for h in outs], 1), cache)
    np.testing.assert_allclose(results[True][0][mask], results[False][0][mask], atol=TOL)
    windowed, full = results[True][1], results[False][1]
    np.testing.assert_array_equal(windowed.mask, full.mask)
    assert int(windowed.index) == int(full.index) == prompt + extra
    # Keys/values of real tokens agree; padded slots are never attended (their values differ).
    real = np.asarray(full.mask)  # [B, S]
    for a, b in ((windowed.k, full.k), (windowed.v, full.v)):
        a, b = np.moveaxis(np.asarray(a), 3, 1), np.moveaxis(np.asarray(b), 3, 1)  # [L,S,B,K,Dh]
        np.testing.assert_allclose(a[:, real.T], b[:, real.T], atol=TOL)
    cache = init_cache(CONFIG, batch, max_len=4)
    with pytest.raises(ValueError, match="window must be in"):
        forward(graphdef, state, tokens[:, :1], positions[:, :1], mask[:, :1], cache, window=5)


def test_cache_is_a_while_loop_carry(model):
    """Greedy decoding inside lax.fori_loop equals the same decoding step by step."""
    batch, prompt, new = 2, 5, 4
    tokens, mask, positions = padded_batch(CONFIG.vocab_size, batch=batch, length=prompt)
    graphdef, state = nnx.split(model)

    def greedy(hidden, state):
        logits = nnx.merge(graphdef, state).logits(hidden[:, -1:])
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    @jax.jit
    def generate(state, tokens, positions, mask):
        cache = init_cache(CONFIG, batch, prompt + new)
        hidden, cache = forward(graphdef, state, tokens, positions, mask, cache)
        out = jnp.zeros((batch, new), jnp.int32)

        def body(i, carry):
            tok, cache, out = carry
            out = out.at[:, i].set(tok[:, 0])
            pos = next_positions(cache)[:, None]
            real = jnp.ones_like(tok, jnp.bool_)
            hidden, cache = forward(graphdef, state, tok, pos, real, cache)
            return greedy(hidden, state), cache, out

        _, _, out = jax.lax.fori_loop(0, new, body, (greedy(hidden, state), cache, out))
        return out

    out = np.asarray(generate(state, tokens, positions, mask))
    # One full forward over prompt + generated tokens must predict each generated token.
    seq = np.concatenate([tokens, out], axis=1)
    seq_mask = np.concatenate([mask, np.ones_like(out, bool)], axis=1)
    hidden, _ = _run(model, seq, seq_mask, positions_from_mask(jnp.asarray(seq_mask)))
    logits = model.logits(hidden[:, prompt - 1 : prompt + new - 1])
    np.testing.assert_array_equal(out, np.argmax(logits, axis=-1))


def test_pure_forward_and_module_agree_under_jit(model):
    tokens, mask, positions = padded_batch(CONFIG.vocab_size)
    eager, _ = _run(model, tokens, mask, positions)
    graphdef, state = nnx.split(model)
    jitted, _ = jax.jit(forward, static_argnums=0)(graphdef, state, tokens, positions, mask)
    np.testing.assert_allclose(eager, jitted, atol=TOL)


@functools.partial(jax.jit, static_argnums=0)
def _logits_loss_and_grad(graphdef, state, tokens, positions, mask):
    def loss(state):
        m = nnx.merge(graphdef, state)
        hidden, _ = m(tokens, positions, mask)
        return jnp.sum(jnp.where(mask[..., None], m.logits(hidden), 0.0) ** 2)

    return jax.value_and_grad(loss)(state)


@pytest.fixture(scope="module")
def remat_reference(model):
    tokens, mask, positions = (jnp.asarray(x) for x in padded_batch(CONFIG.vocab_size, 2, 6))
    graphdef, state = nnx.split(model)
    inputs = (tokens, positions, mask)
    return inputs, _logits_loss_and_grad(graphdef, state, *inputs)


@pytest.mark.parametrize("policy", ["full", "dots_saveable", "dots_with_no_batch_dims_saveable",
                                    "save_attention_out"])
def test_remat_policies_give_same_values_and_gradients(model, remat_reference, policy):
    inputs, (l1, g1) = remat_reference
    graphdef, state = nnx.split(model)
    remat = nnx.merge(graphdef, state)
    remat.config = dataclasses.replace(CONFIG, remat=policy)
    remat_graphdef = nnx.graphdef(remat)
    jaxpr = str(jax.make_jaxpr(_logits_loss_and_grad, static_argnums=0)(remat_graphdef, state,
                                                                        *inputs))
    assert "remat" in jaxpr
    l2, g2 = _logits_loss_and_grad(remat_graphdef, state, *inputs)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        # Recomputation reorders float32 sums: agreement relative to each gradient's scale.
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())


def test_remat_names_cover_the_policy_table(model, remat_reference):
    assert set(REMAT) == set(REMAT_POLICIES)
    assert dataclasses.replace(CONFIG, remat=True).remat == "full"
    jaxpr = jax.make_jaxpr(_logits_loss_and_grad, static_argnums=0)(
        nnx.graphdef(model), nnx.state(model), *remat_reference[0])
    assert "remat" not in str(jaxpr)


def test_logits_and_tied_lm_head(model):
    tokens, mask, positions = padded_batch(CONFIG.vocab_size)
    hidden, _ = _run(model, tokens, mask, positions)
    np.testing.assert_allclose(
        model.logits(hidden), hidden @ model.lm_head_weight(), rtol=1e-5, atol=1e-5
    )
    tied = init_model(dataclasses.replace(CONFIG, tie_word_embeddings=True))
    assert tied.lm_head is None
    np.testing.assert_array_equal(tied.lm_head_weight(), tied.embed[...].T)


def test_bfloat16_compute_and_params(model):
    config = dataclasses.replace(CONFIG, dtype="bfloat16", param_dtype="bfloat16")
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(abstract))} == {jnp.dtype(jnp.bfloat16)}
    graphdef, state = nnx.split(model)
    bf16 = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    bf16.config = config
    tokens, mask, positions = padded_batch(CONFIG.vocab_size)
    hidden, _ = _run(bf16, tokens, mask, positions)
    assert hidden.dtype == jnp.bfloat16
    ref, _ = _run(model, tokens, mask, positions)
    err = np.abs(np.asarray(hidden, np.float32) - np.asarray(ref))[mask]
    assert err.mean() < 0.05 * np.abs(np.asarray(ref))[mask].mean()


def test_layers_are_independent_and_stacked(model):
    q = model.layers.attn.q_proj[...]
    assert q.shape == (2, 32, 4, 12)
    assert not np.allclose(q[0], q[1])
    assert model.layers.attn.q_proj.get_metadata("logical_axes")[0] == "layers"


def test_decode_step_compiles_once(model):
    graphdef, state = nnx.split(model)
    step = jax.jit(functools.partial(forward, graphdef))
    cache = init_cache(CONFIG, 2, 8)
    tok = jnp.zeros((2, 1), jnp.int32)
    real = jnp.ones((2, 1), bool)
    for _ in range(3):
        _, cache = step(state, tok, next_positions(cache)[:, None], real, cache)
    assert step._cache_size() == 1
