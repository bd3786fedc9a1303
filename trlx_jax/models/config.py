"""`ModelConfig`: the architecture of a Llama 3 / Qwen2 / Qwen3 decoder, read from an HF config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "llama3")
_DTYPES = ("float32", "bfloat16")
# Attention kernels (`attention.py`) and per-layer rematerialization policies (`transformer.py`).
ATTENTION_KERNELS = ("auto", "dense", "blockwise", "cudnn", "splash")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "save_attention_out")
# Keys of `rope_parameters` that the llama3 scaling reads.
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of one decoder; hashable, so it can sit in an NNX graphdef.

    `dtype` is the compute dtype of activations, `param_dtype` the storage dtype of weights
    (each "float32" or "bfloat16"). `remat` is the rematerialization policy of each layer in
    the backward pass (one of REMAT_POLICIES; True / False mean "full" / "none"): "full"
    recomputes the whole layer, "dots_saveable" keeps every matmul output,
    "dots_with_no_batch_dims_saveable" the weight matmuls' (attention is recomputed),
    "save_attention_out" the attention output and its softmax statistics. `attention` picks
    the attention kernel (ATTENTION_KERNELS, see `attention.py`) with its query / key block
    sizes `attention_block_q` / `attention_block_kv`.
    `hf_extra` keeps the source HF config's other keys (token ids, ...) for `to_hf`.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    # llama3 scaling as sorted (key, value) pairs, empty for the default RoPE.
    rope_scaling: tuple[tuple[str, float], ...] = ()
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "auto"
    attention_block_q: int = 512
    attention_block_kv: int = 512
    hf_extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}"
            )
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope type {self.rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}"
            )
        for name in ("dtype", "param_dtype"):
            value = jnp.dtype(getattr(self, name)).name
            if value not in _DTYPES:
                raise ValueError(f"{name} must be one of {_DTYPES}, got {value!r}")
            object.__setattr__(self, name, value)
        if isinstance(self.remat, bool):
            object.__setattr__(self, "remat", "full" if self.remat else "none")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat (model.remat) must be one of {REMAT_POLICIES}, got "
                             f"{self.remat!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention (model.attention) must be one of {ATTENTION_KERNELS}, "
                             f"got {self.attention!r}")
        for name in ("attention_block_q", "attention_block_kv"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} (model.{name}) must be >= 1, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )

    @property
    def compute_dtype(self) -> jnp.dtype:
        """The activation dtype as a numpy dtype."""
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> jnp.dtype:
        """The parameter dtype as a numpy dtype."""
        return jnp.dtype(self.param_dtype)

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> ModelConfig:
        """Reads a transformers config (4.x or 5.x attribute names); `overrides` replace fields."""
        model_type = getattr(hf_config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported architecture: model_type {model_type!r}; "
                f"supported: {SUPPORTED_MODEL_TYPES}"
            )
        if getattr(hf_config, "use_sliding_window", False):
            raise ValueError("sliding-window attention (use_sliding_window=True) is not supported")
        act = getattr(hf_config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"only the SiLU (SwiGLU) MLP is supported, got hidden_act={act!r}")
        heads = hf_config.num_attention_heads
        rope_theta, rope_type, rope_scaling = _read_rope(hf_config)
        attention_bias = bool(getattr(hf_config, "attention_bias", False))
        # Qwen2 hard-codes q/k/v biases (and none on o); the others follow `attention_bias`.
        qkv_bias = True if model_type == "qwen2" else attention_bias
        o_bias = False if model_type == "qwen2" else attention_bias
        fields = dict(
            model_type=model_type,
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            intermediate_size=hf_config.intermediate_size,
            num_layers=hf_config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
            head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
            rms_norm_eps=float(hf_config.rms_norm_eps),
            rope_theta=rope_theta,
            rope_type=rope_type,
            rope_scaling=rope_scaling,
            max_position_embeddings=hf_config.max_position_embeddings,
            tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            init_std=float(getattr(hf_config, "initializer_range", 0.02)),
            hf_extra=hf_config.to_dict(),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> Any:
        """Builds the transformers config (`LlamaConfig`, `Qwen2Config`, `Qwen3Config`)."""
        from transformers import CONFIG_MAPPING

        rope = dict(rope_type=self.rope_type, rope_theta=self.rope_theta, **dict(self.rope_scaling))
        fields = dict(self.hf_extra)
        # Stale 4.x spellings would override `rope_parameters` when transformers standardizes.
        fields.pop("rope_theta", None)
        fields.pop("rope_scaling", None)
        fields.update(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters=rope,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.init_std,
            hidden_act="silu",
            dtype=self.param_dtype,
            architectures=[_ARCHITECTURES[self.model_type]],
        )
        if self.model_type == "llama":
            fields.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.model_type == "qwen3":
            fields.update(attention_bias=self.qkv_bias)
        fields.pop("model_type", None)
        return CONFIG_MAPPING[self.model_type].from_dict(fields)


_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def _read_rope(hf_config: Any) -> tuple[float, str, tuple[tuple[str, float], ...]]:
    """(theta, type, llama3 params) from `rope_parameters` or 4.x `rope_theta`/`rope_scaling`."""
    params = getattr(hf_config, "rope_parameters", None)
    if not params:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params["rope_theta"] = getattr(hf_config, "rope_theta", 10000.0)
    if isinstance(params, Mapping) and "rope_theta" not in params and "rope_type" not in params:
        raise ValueError(f"per-layer RoPE parameters are not supported: {dict(params)}")
    rope_type = params.get("rope_type", params.get("type", "default"))
    scaling: tuple[tuple[str, float], ...] = ()
    if rope_type == "llama3":
        missing = [k for k in _LLAMA3_KEYS if k not in params]
        if missing:
            raise ValueError(f"llama3 rope scaling is missing {missing}")
        scaling = tuple((k, float(params[k])) for k in _LLAMA3_KEYS)
    return float(params["rope_theta"]), rope_type, scaling
