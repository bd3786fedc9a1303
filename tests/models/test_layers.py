"""Building blocks against independent references (transformers' RoPE tables, numpy)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hf_testing import FAMILIES
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from trlx_jax.models import ModelConfig
from trlx_jax.models.layers import apply_rope, rms_norm, rope_inv_freq


@pytest.mark.parametrize("family", ["llama3", "qwen3"])
def test_rope_inv_freq_matches_transformers(family):
    hf = FAMILIES[family]()
    config = ModelConfig.from_hf(hf)
    if config.rope_type == "llama3":
        ref, scale = ROPE_INIT_FUNCTIONS["llama3"](hf)
        # All three llama3 regimes occur, so each branch of the rescaling is checked.
        default = LlamaRotaryEmbedding.compute_default_rope_parameters(hf)[0].numpy()
        ratio = default / ref.numpy()
        assert np.isclose(ratio, 1).any() and np.isclose(ratio, 8).any()
        assert ((ratio > 1.01) & (ratio < 7.99)).any()
    else:
        ref, scale = LlamaRotaryEmbedding.compute_default_rope_parameters(hf)
    assert scale == 1.0
    np.testing.assert_allclose(rope_inv_freq(config), ref.numpy(), rtol=1e-6)


def test_apply_rope_is_rotation_of_half_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)
    angle = rng.normal(size=(2, 3, 4)).astype(np.float32)
    out = np.asarray(apply_rope(jnp.asarray(x), jnp.sin(angle), jnp.cos(angle)))
    a, b = x[..., :4], x[..., 4:]
    c, s = np.cos(angle)[:, :, None], np.sin(angle)[:, :, None]
    np.testing.assert_allclose(out[..., :4], a * c - b * s, atol=1e-6)
    np.testing.assert_allclose(out[..., 4:], b * c + a * s, atol=1e-6)


def test_rms_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 16)).astype(np.float32)
    w = rng.normal(size=(16,)).astype(np.float32)
    ref = w * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms_norm(jnp.asarray(x), jnp.asarray(w), 1e-6), ref, rtol=1e-5)
