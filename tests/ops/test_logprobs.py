"""Chunked log-probs: equal to a naive full log-softmax (values and gradients), bounded memory."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from trlx_jax.ops.logprobs import token_logprobs

# Chunks span all B rows: chunk_size 6 -> 2 positions per chunk, 4 chunks, the last one ragged.
B, T, D, V, K, KG = 3, 7, 8, 37, 4, 3
TEMPERATURE = 0.7


def make_inputs(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.standard_normal((B, T, D)), dtype)
    head = jnp.asarray(0.7 * rng.standard_normal((D, V)), dtype)
    ids = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    gather_ids = jnp.asarray(rng.integers(0, V, (B, T, KG)), jnp.int32)
    return hidden, head, ids, gather_ids


@functools.partial(jax.jit, static_argnames=("temperature", "top_k"))
def naive(hidden, head, ids, gather_ids, temperature=TEMPERATURE, top_k=K):
    """The textbook computation on the whole [B, T, V] log-softmax, in float32."""
    logits = jnp.einsum("btd,dv->btv", hidden.astype(jnp.float32), head.astype(jnp.float32))
    logp_full = jax.nn.log_softmax(logits / temperature, axis=-1)
    probs = jax.nn.softmax(logits / temperature, axis=-1)
    topk_logp, topk_ids = jax.lax.top_k(logp_full, top_k)
    return {
        "logp": jnp.take_along_axis(logp_full, ids[..., None], axis=-1)[..., 0],
        "entropy": -(probs * logp_full).sum(-1),
        "topk_ids": topk_ids,
        "topk_logp": topk_logp,
        "gathered_logp": jnp.take_along_axis(logp_full, gather_ids, axis=-1),
    }


def chunked(hidden, head, ids, gather_ids, chunk_size=6):
    out = token_logprobs(
        hidden,
        head,
        ids,
        temperature=TEMPERATURE,
        top_k=K,
        gather_ids=gather_ids,
        chunk_size=chunk_size,
    )
    return out._asdict()


def scalar(outputs, seed=1):
    """A loss touching every differentiable output with its own random per-token weights."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for name in ["logp", "entropy", "topk_logp", "gathered_logp"]:
        w = rng.standard_normal(outputs[name].shape).astype(np.float32)
        total = total + jnp.sum(w * outputs[name])
    return total


@pytest.mark.parametrize("chunk_size", [2, 6, 9, 64, None])
def test_forward_matches_naive(chunk_size):
    hidden, head, ids, gather_ids = make_inputs()
    got = jax.jit(chunked, static_argnames="chunk_size")(
        hidden, head, ids, gather_ids, chunk_size=chunk_size
    )
    want = naive(hidden, head, ids, gather_ids)
    for name in ["logp", "entropy", "topk_logp", "gathered_logp"]:
        assert got[name].dtype == jnp.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(got["topk_ids"], want["topk_ids"])
    assert got["topk_ids"].dtype == jnp.int32
    assert got["logp"].shape == (B, T) and got["gathered_logp"].shape == (B, T, KG)


def test_gradients_match_naive_with_ragged_remainder():
    hidden, head, ids, gather_ids = make_inputs()
    grad_chunked = jax.jit(
        jax.grad(lambda h, w: scalar(chunked(h, w, ids, gather_ids)), argnums=(0, 1))
    )
    grad_naive = jax.jit(
        jax.grad(lambda h, w: scalar(naive(h, w, ids, gather_ids)), argnums=(0, 1))
    )
    for got, want in zip(grad_chunked(hidden, head), grad_naive(hidden, head), strict=True):
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_use_float32_math():
    hidden, head, ids, gather_ids = make_inputs(jnp.bfloat16)
    got = jax.jit(chunked)(hidden, head, ids, gather_ids)
    want = naive(hidden.astype(jnp.float32), head.astype(jnp.float32), ids, gather_ids)
    for name in ["logp", "entropy", "topk_logp", "gathered_logp"]:
        assert got[name].dtype == jnp.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)

    grads = jax.jit(jax.grad(lambda h, w: scalar(chunked(h, w, ids, gather_ids)), argnums=(0, 1)))(
        hidden, head
    )
    want_grads = jax.grad(lambda h, w: scalar(naive(h, w, ids, gather_ids)), argnums=(0, 1))(
        hidden.astype(jnp.float32), head.astype(jnp.float32)
    )
    for got_g, want_g in zip(grads, want_grads, strict=True):
        assert got_g.dtype == jnp.bfloat16
        # Float32 accumulation across chunks, one rounding to bf16 at the end: within half a
        # bf16 ulp (2^-8 relative) of the float32 gradient.
        np.testing.assert_allclose(got_g.astype(jnp.float32), want_g, rtol=2.0**-8, atol=1e-6)


def test_disabled_outputs_are_none_and_temperature_defaults():
    hidden, head, ids, _ = make_inputs()
    out = token_logprobs(hidden, head, ids, entropy=False, chunk_size=6)
    assert out.entropy is None and out.topk_ids is None and out.topk_logp is None
    assert out.gathered_logp is None
    want = naive(hidden, head, ids, jnp.zeros((B, T, 1), jnp.int32), temperature=1.0)
    np.testing.assert_allclose(out.logp, want["logp"], rtol=1e-5, atol=1e-5)
    # Greedy sampling (temperature 0) records the temperature-1 distribution.
    greedy = token_logprobs(hidden, head, ids, temperature=0.0, chunk_size=6)
    np.testing.assert_array_equal(greedy.logp, token_logprobs(hidden, head, ids, chunk_size=6).logp)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, head, ids, temperature=-1.0)


def test_chunked_step_allocates_a_fraction_of_naive():
    # Shapes where the [N, V] float32 logits dominate: the chunked step must not hold them.
    n, d, v = 1024, 16, 8192
    shapes = (
        jax.ShapeDtypeStruct((4, n // 4, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((4, n // 4), jnp.int32),
    )

    def temp_bytes(chunk_size):
        def objective(h, w, ids):
            out = token_logprobs(h, w, ids, top_k=2, chunk_size=chunk_size)
            return out.logp.sum() + out.entropy.sum() + out.topk_logp.sum()

        step = jax.jit(jax.grad(objective, argnums=(0, 1)))
        return step.lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    logits_bytes = n * v * 4
    assert temp_bytes(None) >= logits_bytes
    assert temp_bytes(32) <= 0.25 * logits_bytes


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_batch_sharded_inputs_stay_sharded(axis_type):
    # The data-parallel train step shards the batch axis; the scan must not run over it.
    mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
    hidden, head, ids, gather_ids = make_inputs()
    hidden, ids, gather_ids = (jnp.concatenate([x, x[:1]]) for x in (hidden, ids, gather_ids))
    rows = NamedSharding(mesh, P("data"))
    sharded = jax.device_put((hidden, ids, gather_ids), rows)
    # Parameters live on the mesh too (replicated here), as in the train step.
    head = jax.device_put(head, NamedSharding(mesh, P()))

    def forward(h, w, i, g):
        out = token_logprobs(h, w, i, gather_ids=g, temperature=TEMPERATURE, chunk_size=6)
        return out._asdict()

    got = jax.jit(forward)(sharded[0], head, sharded[1], sharded[2])
    want = naive(hidden, head, ids, gather_ids)
    for name in ["logp", "entropy", "gathered_logp"]:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert got["logp"].sharding.is_equivalent_to(rows, 2)
    # Forward + backward without gathering the batch (only the head's gradient is reduced).
    loss = lambda h, w: sum(
        x.sum() for x in forward(h, w, sharded[1], sharded[2]).values() if x is not None
    )
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(sharded[0], head).compile().as_text()
    assert "all-gather(" not in hlo


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_top_k_on_batch_sharded_inputs(axis_type):
    # The top-K of a batch-sharded input equals the unsharded one and keeps the batch sharding.
    mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
    hidden = jax.random.normal(jax.random.key(0), (8, 12, 16))
    head = jax.random.normal(jax.random.key(1), (16, 1000))
    ids = jnp.zeros((8, 12), jnp.int32)
    rows = NamedSharding(mesh, P("data"))
    sharded = jax.device_put((hidden, ids), rows)
    head_on_mesh = jax.device_put(head, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        got = jax.jit(lambda h, w, i: token_logprobs(h, w, i, top_k=4, chunk_size=16))(
            sharded[0], head_on_mesh, sharded[1]
        )
    want = token_logprobs(hidden, head, ids, top_k=4, chunk_size=None)
    np.testing.assert_array_equal(got.topk_ids, want.topk_ids)
    np.testing.assert_allclose(got.topk_logp, want.topk_logp, rtol=1e-5, atol=1e-5)
    assert got.topk_ids.sharding.is_equivalent_to(rows, 3)


def _count_primitive(jaxpr, name):
    """Occurrences of primitive `name` in a closed jaxpr and every sub-jaxpr it calls."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_primitive(sub, name)
    return count


def test_backward_does_not_recompute_the_top_k():
    # The custom VJP gathers the top-K cotangents at the forward's ids: the gradient's program
    # sorts the vocabulary exactly as often as the forward alone does.
    hidden, head, ids, gather_ids = make_inputs()
    forward = lambda h, w: scalar(chunked(h, w, ids, gather_ids))
    top_k_forward = _count_primitive(jax.make_jaxpr(forward)(hidden, head).jaxpr, "top_k")
    gradient = jax.make_jaxpr(jax.grad(forward, argnums=(0, 1)))(hidden, head)
    assert top_k_forward > 0
    assert _count_primitive(gradient.jaxpr, "top_k") == top_k_forward
