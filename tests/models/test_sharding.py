"""Sharding rules on 8 simulated CPU devices: placements, sharded == single-device, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_testing import FAMILIES, make_hf_model, padded_batch
from jax.sharding import PartitionSpec as P
from transformers import Qwen3Config

from trlx_jax.models import (
    ModelConfig,
    constrain,
    forward,
    hf_io,
    init_cache,
    init_model,
    load_hf,
    make_mesh,
    shard_model,
    state_shardings,
)
from trlx_jax.models.sharding import logical_to_spec, param_spec, replace_rules

MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]
# Every sharded dim divides by 8: vocab 128, embed 64, mlp 128, heads 8, kv_heads 4.
CONFIG = ModelConfig(
    model_type="qwen3",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=8,
    num_kv_heads=4,
    head_dim=8,
    qkv_bias=True,
    qk_norm=True,
    init_std=0.3,
)
TOL = 1e-5
# The rules written out for this model's parameters: ZeRO-3 over fsdp, Megatron over tensor.
EXPECTED = {
    "embed": P("tensor", "fsdp"),
    "lm_head": P("fsdp", "tensor"),
    "final_norm": P(None),
    "layers/attn_norm": P(None, None),
    "layers/attn/q_proj": P(None, "fsdp", "tensor", None),
    "layers/attn/k_proj": P(None, "fsdp", "tensor", None),
    "layers/attn/o_proj": P(None, "tensor", None, "fsdp"),
    "layers/attn/q_bias": P(None, "tensor", None),
    "layers/attn/q_norm": P(None, None),
    "layers/mlp/gate_proj": P(None, "fsdp", "tensor"),
    "layers/mlp/down_proj": P(None, "tensor", "fsdp"),
}


def _spec(x) -> P:
    """The array's PartitionSpec padded to its rank (jax drops trailing Nones of outputs)."""
    spec = tuple(x.sharding.spec)
    return P(*spec, *(None,) * (x.ndim - len(spec)))


def _flat(state):
    return {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def reference():
    """(single-device hidden states, logits, batch) of the seed-0 model."""
    batch = padded_batch(CONFIG.vocab_size, batch=8, length=8)
    tokens, mask, positions = batch
    model = init_model(CONFIG, seed=0)
    graphdef, state = nnx.split(model)
    hidden, _ = jax.jit(forward, static_argnums=0)(graphdef, state, tokens, positions, mask)
    return np.asarray(hidden), np.asarray(model.logits(hidden)), batch


def test_make_mesh_axes():
    mesh = make_mesh((2, 2, 2))
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.size == 8
    with pytest.raises(ValueError, match="one size per axis"):
        make_mesh((2, 4))


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_forward_matches_single_device(shape, reference):
    ref_hidden, ref_logits, (tokens, mask, positions) = reference
    mesh = make_mesh(shape)
    model = init_model(CONFIG, seed=0)
    shard_model(model, mesh)
    graphdef, state = nnx.split(model)
    flat = _flat(state)
    for name, var in flat.items():
        expected = param_spec(name, var.shape, var.get_metadata("logical_axes"), mesh)
        assert var[...].sharding.spec == expected, name
    for name, spec in EXPECTED.items():
        assert flat[name][...].sharding.spec == spec, name
    shardings = state_shardings(state, mesh)

    @jax.jit
    def run(state, tokens, positions, mask):
        hidden, _ = forward(graphdef, state, tokens, positions, mask)
        return hidden, nnx.merge(graphdef, state).logits(hidden)

    with jax.set_mesh(mesh):
        step = jax.jit(run, in_shardings=(shardings, None, None, None))
        hidden, logits = step(state, tokens, positions, mask)
    # The layer-boundary constraints shard the batch over data x fsdp.
    batch_axes = tuple(a for a, n in zip(("data", "fsdp"), shape, strict=False) if n > 1)
    assert _spec(hidden)[0] in (batch_axes, *batch_axes)
    np.testing.assert_allclose(np.asarray(hidden)[mask], ref_hidden[mask], atol=TOL)
    np.testing.assert_allclose(np.asarray(logits)[mask], ref_logits[mask], atol=TOL)


def test_sharded_decode_step_matches_full_forward(reference):
    ref_hidden, _, (tokens, mask, positions) = reference
    mesh = make_mesh((2, 2, 2))
    model = init_model(CONFIG, seed=0)
    shard_model(model, mesh)
    graphdef, state = nnx.split(model)
    step = jax.jit(forward, static_argnums=0, donate_argnames="cache")
    with jax.set_mesh(mesh):
        cache = jax.jit(lambda: init_cache(CONFIG, 8, 10))()
        assert _spec(cache.k) == P(None, ("data", "fsdp"), "tensor", None, None)
        _, cache = step(graphdef, state, tokens[:, :7], positions[:, :7], mask[:, :7], cache=cache)
        last, cache = step(
            graphdef, state, tokens[:, 7:], positions[:, 7:], mask[:, 7:], cache=cache
        )
    real = mask[:, 7]  # row 2 is all padding
    np.testing.assert_allclose(np.asarray(last)[real, 0], ref_hidden[real, 7], atol=TOL)


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 4)])
def test_load_hf_places_each_parameter(shape, tmp_path_factory):
    hf = Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=8,
    )
    path = str(tmp_path_factory.mktemp("qwen3"))
    make_hf_model(hf).save_pretrained(path)
    mesh = make_mesh(shape)
    sharded, _ = load_hf(path, mesh=mesh)
    plain, _ = load_hf(path)
    flat_sharded, flat_plain = _flat(nnx.state(sharded)), _flat(nnx.state(plain))
    for name, spec in EXPECTED.items():
        if name != "layers/attn/q_bias":  # Qwen3 checkpoints have no q/k/v biases
            assert flat_sharded[name][...].sharding.spec == spec, name
    for name, var in flat_sharded.items():
        # Each device's block was read on its own: all blocks together equal the full tensor.
        np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(flat_plain[name][...]))


def test_load_hf_reads_only_each_devices_block(tmp_path, monkeypatch):
    path = str(tmp_path)
    make_hf_model(FAMILIES["llama3"]()).save_pretrained(path)
    reads = []
    original = hf_io._Checkpoint.reader

    def recording_reader(self, name, dtype):
        read = original(self, name, dtype)

        def wrapped(index):
            block = read(index)
            reads.append((name, block.shape))
            return block

        return wrapped

    monkeypatch.setattr(hf_io._Checkpoint, "reader", recording_reader)
    # kv_heads = 2 does not divide over tensor = 4: replicate them instead.
    load_hf(path, mesh=make_mesh((1, 2, 4)), rules=replace_rules(kv_heads=None))
    # gate_proj is HF [F=96, D=64]: fsdp splits D in 2, tensor splits F in 4; o_proj is
    # [D=64, H*Dh=4*16] with D over fsdp and heads over tensor.
    gate = [s for n, s in reads if n == "model.layers.0.mlp.gate_proj.weight"]
    o_proj = [s for n, s in reads if n == "model.layers.1.self_attn.o_proj.weight"]
    assert len(gate) == len(o_proj) == 8
    assert set(gate) == {(24, 32)} and set(o_proj) == {(32, 16)}


def test_rule_that_does_not_divide_names_the_parameter(tmp_path):
    mesh = make_mesh((1, 2, 4))
    bad = dataclasses.replace(CONFIG, num_kv_heads=2)
    model = init_model(bad)
    with pytest.raises(
        ValueError,
        match=r"'layers/attn/k_bias'.*dim 1 \('kv_heads', size 2\).*\('tensor',\) \(size 4\)",
    ):
        shard_model(model, mesh)


def test_unknown_logical_axis_and_axis_reuse():
    with pytest.raises(ValueError, match="no sharding rule for logical axis 'embd'"):
        logical_to_spec(("embd",))
    mesh = make_mesh((1, 2, 4))
    with pytest.raises(ValueError, match=r"unknown logical axes \['kv_head'\]"):
        replace_rules(kv_head=None)
    with pytest.raises(ValueError, match="used twice"):
        param_spec("w", (8, 8), ("mlp", "heads"), mesh)


def test_constrain_is_identity_without_mesh_and_falls_back_on_odd_batch():
    x = jnp.ones((8, 4, 16))
    assert constrain(x, ("batch", "seq", "act_embed")) is x
    mesh = make_mesh((2, 2, 2))
    f = jax.jit(lambda x: constrain(x * 2, ("batch", "seq", "act_embed")))
    with jax.set_mesh(mesh):
        assert _spec(f(x)) == P(("data", "fsdp"), None, None)
        # Batch 6: data x fsdp (4) does not divide it, data (2) does.
        assert _spec(f(jnp.ones((6, 4, 16)))) == P("data", None, None)
        assert _spec(f(jnp.ones((3, 4, 16)))) == P(None, None, None)
