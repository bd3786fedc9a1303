"""Decoder building blocks: RMSNorm, rotary embeddings, the GQA layer, SwiGLU MLP.

The attention kernels themselves live in `attention.py`.

Every parameter is an `nnx.Param` whose `logical_axes` metadata names its dimensions; the
sharding rules in `sharding.py` turn those names into mesh axes. A `Block` holds the weights
of all layers, stacked on a leading "layers" axis: it is called only through the layer scan
in `transformer.py`, which hands each step a one-layer slice.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from trlx_jax.models.attention import OUT_NAME, AttentionMask, attend
from trlx_jax.models.config import ModelConfig


def param(
    rngs: nnx.Rngs | None,
    shape: tuple[int, ...],
    logical_axes: tuple[str, ...],
    config: ModelConfig,
    init: str = "normal",
) -> nnx.Param:
    """A parameter of `shape` initialized as N(0, init_std^2), "ones" or "zeros"."""
    dtype = config.weight_dtype
    if init == "normal":
        value = config.init_std * jax.random.normal(rngs.params(), shape, dtype)
    elif init == "ones":
        value = jnp.ones(shape, dtype)
    else:
        value = jnp.zeros(shape, dtype)
    return nnx.Param(value, logical_axes=logical_axes)


def _optional(
    present: bool, shape: tuple[int, ...], axes: tuple[str, ...], config: ModelConfig, init: str
) -> nnx.Param | None:
    return param(None, shape, axes, config, init) if present else None


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis, statistics in float32: [..., D] -> [..., D] in x.dtype."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse RoPE frequencies [head_dim/2] in float32, with the llama3 rescaling if configured."""
    dim = config.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(config.rope_theta), exponent)).astype(
        np.float32
    )
    if config.rope_type != "llama3":
        return inv_freq
    p = dict(config.rope_scaling)
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_len = p["original_max_position_embeddings"]
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / np.float32(factor), inv_freq)
    smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_sin_cos(
    positions: jax.Array, inv_freq: np.ndarray, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
    """Rotary tables for positions [B, T] -> (sin, cos) each [B, T, head_dim/2] in `dtype`."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    return jnp.sin(angles).astype(dtype), jnp.cos(angles).astype(dtype)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotates the two halves of the head dim (HF convention): [B, T, H, Dh] -> [B, T, H, Dh]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    sin, cos = sin[:, :, None, :], cos[:, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nnx.Module):
    """Self-attention with optional q/k/v/o biases and per-head q/k RMSNorm (Qwen3)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        d, h, k, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        c, n = config, config.num_layers
        self.q_proj = param(rngs, (n, d, h, hd), ("layers", "embed", "heads", "head_dim"), c)
        self.k_proj = param(rngs, (n, d, k, hd), ("layers", "embed", "kv_heads", "head_dim"), c)
        self.v_proj = param(rngs, (n, d, k, hd), ("layers", "embed", "kv_heads", "head_dim"), c)
        self.o_proj = param(rngs, (n, h, hd, d), ("layers", "heads", "head_dim", "embed"), c)
        # Optional parameters are assigned once (NNX fixes an attribute's data/static kind).
        bias, norm = config.qkv_bias, config.qk_norm
        self.q_bias = _optional(bias, (n, h, hd), ("layers", "heads", "head_dim"), c, "zeros")
        self.k_bias = _optional(bias, (n, k, hd), ("layers", "kv_heads", "head_dim"), c, "zeros")
        self.v_bias = _optional(bias, (n, k, hd), ("layers", "kv_heads", "head_dim"), c, "zeros")
        self.o_bias = _optional(config.o_bias, (n, d), ("layers", "embed"), c, "zeros")
        self.q_norm = _optional(norm, (n, hd), ("layers", "norm"), c, "ones")
        self.k_norm = _optional(norm, (n, hd), ("layers", "norm"), c, "ones")

    def _project(self, x: jax.Array, kernel: nnx.Param, bias: nnx.Param | None) -> jax.Array:
        y = jnp.einsum("btd,dhk->bthk", x, kernel[...].astype(x.dtype))
        return y if bias is None else y + bias[...].astype(x.dtype)

    def __call__(
        self,
        x: jax.Array,
        sin: jax.Array,
        cos: jax.Array,
        mask: AttentionMask,
        cache: tuple[jax.Array, jax.Array] | None = None,
        layer: jax.Array | int = 0,
        index: jax.Array | int = 0,
        window: int | None = None,
        impl: str = "dense",
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """x [B, T, D] -> (out [B, T, D], cache k, cache v) with the new tokens written.

        `cache` is the STACKED cache of all layers ([L, B, K, S, Dh] each): the new keys/values
        go to layer `layer` at slot `index`, then the queries attend over that layer's S slots,
        or its first `window` slots (`mask` covers those slots), with the attention kernel
        `impl` (`attention.resolve`). Writing into
        the stacked buffer before reading the layer back lets XLA update it in place; a
        per-layer copy would cost a full cache copy per decode step.
        Without a cache the tokens attend to each other and (out, None, None) is returned.
        """
        eps = self.config.rms_norm_eps
        q = self._project(x, self.q_proj, self.q_bias)
        k = self._project(x, self.k_proj, self.k_bias)
        v = self._project(x, self.v_proj, self.v_bias)
        if self.q_norm is not None:
            q = rms_norm(q, self.q_norm[...], eps)
            k = rms_norm(k, self.k_norm[...], eps)
        q = apply_rope(q, sin, cos)
        k = apply_rope(k, sin, cos)
        # Only the new tokens are transposed into the cache layout, never the cache itself.
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        keys, values, cache_k, cache_v = k, v, None, None
        if cache is not None:
            cache_k, cache_v = cache
            start = (layer, 0, 0, index, 0)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k[None].astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v[None].astype(cache_v.dtype), start)
            keys = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False)
            values = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False)
            if window is not None:
                keys, values = keys[:, :, :window], values[:, :, :window]
            keys, values = keys.astype(x.dtype), values.astype(x.dtype)
        out = checkpoint_name(attend(q, keys, values, mask, impl, self.config), OUT_NAME)
        out = jnp.einsum("bthk,hkd->btd", out, self.o_proj[...].astype(x.dtype))
        if self.o_bias is not None:
            out = out + self.o_bias[...].astype(x.dtype)
        return out, cache_k, cache_v


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), optional biases (Llama `mlp_bias`)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        d, f, c, n = config.hidden_size, config.intermediate_size, config, config.num_layers
        self.gate_proj = param(rngs, (n, d, f), ("layers", "embed", "mlp"), c)
        self.up_proj = param(rngs, (n, d, f), ("layers", "embed", "mlp"), c)
        self.down_proj = param(rngs, (n, f, d), ("layers", "mlp", "embed"), c)
        bias = config.mlp_bias
        self.gate_bias = _optional(bias, (n, f), ("layers", "mlp"), c, "zeros")
        self.up_bias = _optional(bias, (n, f), ("layers", "mlp"), c, "zeros")
        self.down_bias = _optional(bias, (n, d), ("layers", "embed"), c, "zeros")

    @staticmethod
    def _linear(x: jax.Array, kernel: nnx.Param, bias: nnx.Param | None) -> jax.Array:
        y = x @ kernel[...].astype(x.dtype)
        return y if bias is None else y + bias[...].astype(x.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, T, D] -> [B, T, D]."""
        gate = self._linear(x, self.gate_proj, self.gate_bias)
        up = self._linear(x, self.up_proj, self.up_bias)
        return self._linear(jax.nn.silu(gate) * up, self.down_proj, self.down_bias)


class Block(nnx.Module):
    """Pre-norm decoder layer x + attn(norm(x)), then + mlp(norm(x)); weights of all layers."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        c, n = config, config.num_layers
        self.attn_norm = param(None, (n, c.hidden_size), ("layers", "norm"), c, "ones")
        self.attn = Attention(config, rngs)
        self.mlp_norm = param(None, (n, c.hidden_size), ("layers", "norm"), c, "ones")
        self.mlp = MLP(config, rngs)

    def __call__(
        self,
        x: jax.Array,
        sin: jax.Array,
        cos: jax.Array,
        mask: AttentionMask,
        cache: tuple[jax.Array, jax.Array] | None = None,
        layer: jax.Array | int = 0,
        index: jax.Array | int = 0,
        window: int | None = None,
        impl: str = "dense",
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """x [B, T, D] -> (x [B, T, D], cache k, cache v); see `Attention`."""
        eps = self.config.rms_norm_eps
        h = rms_norm(x, self.attn_norm[...], eps)
        out, cache_k, cache_v = self.attn(h, sin, cos, mask, cache, layer, index, window, impl)
        x = x + out
        x = x + self.mlp(rms_norm(x, self.mlp_norm[...], eps))
        return x, cache_k, cache_v
