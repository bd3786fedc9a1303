"""HF parity: load_hf logits == transformers logits (<= 1e-4, float32), and save_hf round trips."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hf_testing import FAMILIES, hf_logits, make_hf_model, padded_batch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config

from trlx_jax.models import forward, load_hf, save_hf

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoint(request, tmp_path_factory):
    """(family name, HF model, directory of its save_pretrained checkpoint)."""
    model = make_hf_model(FAMILIES[request.param]())
    path = str(tmp_path_factory.mktemp(request.param))
    model.save_pretrained(path)
    return request.param, model, path


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, tokens, positions, mask):
    hidden, _ = forward(graphdef, state, tokens, positions, mask)
    return nnx.merge(graphdef, state).logits(hidden)


def _our_logits(model, tokens, mask, positions) -> np.ndarray:
    return np.asarray(_logits(*nnx.split(model), tokens, positions, mask))


def test_logits_match_transformers(checkpoint):
    name, hf_model, path = checkpoint
    model, config = load_hf(path)
    assert config.model_type == hf_model.config.model_type
    tokens, mask, positions = padded_batch(config.vocab_size)
    ours = _our_logits(model, tokens, mask, positions)
    ref = hf_logits(hf_model, tokens, mask, positions)
    # The random weights give O(1) logits, so the tolerance is meaningful.
    assert np.abs(ref[mask]).mean() > 0.3
    assert np.abs(ours - ref)[mask].max() <= TOL, name


def test_save_hf_round_trip(checkpoint, tmp_path):
    name, hf_model, path = checkpoint
    model, config = load_hf(path)
    save_hf(model, config, str(tmp_path))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    original = hf_model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    tokens, mask, positions = padded_batch(config.vocab_size, seed=1)
    ref = hf_logits(hf_model, tokens, mask, positions)
    assert np.abs(hf_logits(reloaded, tokens, mask, positions) - ref)[mask].max() <= TOL, name
    model2, config2 = load_hf(str(tmp_path))
    assert config2 == config
    assert np.abs(_our_logits(model2, tokens, mask, positions) - ref)[mask].max() <= TOL, name


def test_sharded_checkpoints_both_ways(tmp_path):
    hf_model = make_hf_model(FAMILIES["qwen3"]())
    hf_dir, our_dir = str(tmp_path / "hf"), str(tmp_path / "ours")
    hf_model.save_pretrained(hf_dir, max_shard_size="60KB")
    assert os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json"))
    model, config = load_hf(hf_dir)
    save_hf(model, config, our_dir, max_shard_bytes=60_000)
    with open(os.path.join(our_dir, "model.safetensors.index.json")) as f:
        files = set(json.load(f)["weight_map"].values())
    assert len(files) > 1
    tokens, mask, positions = padded_batch(config.vocab_size)
    ref = hf_logits(hf_model, tokens, mask, positions)
    reloaded = AutoModelForCausalLM.from_pretrained(our_dir, dtype=torch.float32).eval()
    assert np.abs(hf_logits(reloaded, tokens, mask, positions) - ref)[mask].max() <= TOL
    model2, _ = load_hf(our_dir)
    assert np.abs(_our_logits(model2, tokens, mask, positions) - ref)[mask].max() <= TOL


def test_bfloat16_load_and_save(tmp_path):
    hf_model = make_hf_model(FAMILIES["qwen2_tied"]())
    path = str(tmp_path / "hf")
    hf_model.save_pretrained(path)
    model, config = load_hf(path, dtype="bfloat16", param_dtype="bfloat16")
    assert model.embed[...].dtype == jnp.bfloat16
    tokens, mask, positions = padded_batch(config.vocab_size)
    hidden, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    assert hidden.dtype == jnp.bfloat16
    ref = hf_logits(hf_model, tokens, mask, positions)
    err = np.abs(np.asarray(model.logits(hidden)) - ref)[mask]
    # bfloat16 weights and activations: only a loose sanity bound (f32 parity is tested above).
    assert err.mean() < 0.1 * np.abs(ref[mask]).mean()
    save_hf(model, config, str(tmp_path / "bf16"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
    assert reloaded.model.embed_tokens.weight.dtype == torch.bfloat16


def _edit_checkpoint(path, edit):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


@pytest.fixture
def llama_dir(tmp_path):
    path = str(tmp_path / "llama")
    make_hf_model(FAMILIES["llama3"]()).save_pretrained(path)
    return path


def test_missing_tensor_is_named(llama_dir):
    _edit_checkpoint(llama_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensors.*model\.layers\.1\.mlp\.up_proj"):
        load_hf(llama_dir)


def test_unexpected_tensor_is_named(llama_dir):
    def add(t):
        t["model.layers.0.self_attn.extra.weight"] = np.zeros((2, 2), np.float32)

    _edit_checkpoint(llama_dir, add)
    with pytest.raises(ValueError, match=r"unexpected tensors.*self_attn\.extra\.weight"):
        load_hf(llama_dir)


def test_shape_mismatch_names_tensor_and_shapes(llama_dir):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 64), np.float32)

    _edit_checkpoint(llama_dir, shrink)
    with pytest.raises(ValueError, match=r"k_proj\.weight.*expected shape \(32, 64\).*\(8, 64\)"):
        load_hf(llama_dir)


def test_unknown_architecture_lists_supported(tmp_path):
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"unsupported architecture.*'gpt2'.*llama.*qwen2.*qwen3"):
        load_hf(str(tmp_path))
