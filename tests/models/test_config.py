"""ModelConfig from/to transformers configs."""

import dataclasses
from types import SimpleNamespace

import pytest
from hf_testing import FAMILIES
from transformers import GPT2Config, Qwen2Config

from trlx_jax.models import ModelConfig


def test_llama3_fields():
    c = ModelConfig.from_hf(FAMILIES["llama3"]())
    assert (c.model_type, c.num_heads, c.num_kv_heads, c.head_dim) == ("llama", 4, 2, 16)
    assert c.rope_type == "llama3" and c.rope_theta == 10000.0
    assert dict(c.rope_scaling) == {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32.0,
    }
    assert not (c.qkv_bias or c.o_bias or c.mlp_bias or c.qk_norm or c.tie_word_embeddings)


def test_llama_biases_and_explicit_head_dim():
    c = ModelConfig.from_hf(FAMILIES["llama_bias_kv1_tied"]())
    assert c.qkv_bias and c.o_bias and c.mlp_bias and c.tie_word_embeddings
    assert (c.num_kv_heads, c.head_dim) == (1, 24)


def test_qwen2_has_qkv_bias_only():
    c = ModelConfig.from_hf(FAMILIES["qwen2_tied"]())
    assert c.qkv_bias and not c.o_bias and not c.qk_norm and c.tie_word_embeddings
    assert c.head_dim == 64 // 4 and c.rope_type == "default"


def test_qwen3_qk_norm_and_head_dim():
    c = ModelConfig.from_hf(FAMILIES["qwen3"]())
    assert c.qk_norm and not c.qkv_bias and c.head_dim == 24 != c.hidden_size // c.num_heads


def test_transformers_4x_rope_attributes():
    hf = SimpleNamespace(
        model_type="llama",
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        rope_theta=500000.0,
        rope_scaling={
            "type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        to_dict=dict,
    )
    c = ModelConfig.from_hf(hf)
    assert c.rope_theta == 500000.0 and c.rope_type == "llama3"
    assert dict(c.rope_scaling)["factor"] == 32.0 and c.head_dim == 4


def test_overrides_dtypes_and_hashable():
    c = ModelConfig.from_hf(FAMILIES["qwen3"](), dtype="bfloat16", param_dtype="bfloat16")
    assert (c.dtype, c.param_dtype) == ("bfloat16", "bfloat16")
    hash(c)
    with pytest.raises(ValueError, match="dtype must be one of"):
        dataclasses.replace(c, dtype="float16")
    with pytest.raises(TypeError, match="no_such_field"):
        ModelConfig.from_hf(FAMILIES["qwen3"](), no_such_field=1)


def test_unknown_model_type_lists_supported():
    with pytest.raises(ValueError, match=r"'gpt2'.*\('llama', 'qwen2', 'qwen3'\)"):
        ModelConfig.from_hf(GPT2Config())


def test_unsupported_features_raise():
    with pytest.raises(ValueError, match="sliding-window"):
        ModelConfig.from_hf(Qwen2Config(use_sliding_window=True))
    with pytest.raises(ValueError, match="rope type 'yarn'"):
        ModelConfig.from_hf(
            Qwen2Config(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
        )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_to_hf_round_trip(family):
    c = ModelConfig.from_hf(FAMILIES[family]())
    hf = c.to_hf()
    assert type(hf) is type(FAMILIES[family]())
    assert ModelConfig.from_hf(hf) == c
