"""`Transformer`: the Llama 3 / Qwen2 / Qwen3 decoder as an NNX module, plus its pure form.

The forward returns final-normed hidden states; logits are a separate step (`logits`, or
`lm_head_weight` for chunked log-probs) so that training never materializes [B, T, V] at once.

Pure-function use in jitted steps (the model holds only `nnx.Param`s, no other state)::

    graphdef, state = nnx.split(model)            # graphdef: static; state: pytree of arrays
    @jax.jit
    def step(state, tokens, positions, mask):
        hidden, _ = forward(graphdef, state, tokens, positions, mask)
        return nnx.merge(graphdef, state).logits(hidden)
    grads = jax.grad(loss_fn)(state, ...)         # any jax transform works on `state`
    model = nnx.merge(graphdef, new_state)        # back to a module when needed

`positions` are RoPE positions per token (`positions_from_mask` for left-padded batches);
`attention_mask` is True on real tokens. Padded query rows produce finite garbage that callers
mask out. The layers run in one `lax.scan` over stacked parameters (compile time independent
of depth); `config.remat` names the policy that rematerializes each layer in the backward
pass (`REMAT`), `config.attention` the attention kernel (`attention.resolve`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from trlx_jax.models import attention
from trlx_jax.models.attention import AttentionMask
from trlx_jax.models.cache import KVCache, constrain_cache
from trlx_jax.models.config import ModelConfig
from trlx_jax.models.layers import Block, param, rms_norm, rope_inv_freq, rope_sin_cos
from trlx_jax.models.sharding import constrain

_HIDDEN_AXES = ("batch", "seq", "act_embed")

_POLICIES = jax.checkpoint_policies
# `ModelConfig.remat` name -> the `jax.checkpoint` policy of one layer (None: no remat).
REMAT = {
    "none": None,
    "full": _POLICIES.nothing_saveable,
    "dots_saveable": _POLICIES.dots_saveable,
    "dots_with_no_batch_dims_saveable": _POLICIES.dots_with_no_batch_dims_saveable,
    "save_attention_out": _POLICIES.save_only_these_names(attention.OUT_NAME,
                                                          attention.STATS_NAME),
}


class Transformer(nnx.Module):
    """Decoder-only transformer: embed, layers (a Block of stacked weights), final_norm, lm_head."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        self.embed = param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), c)
        self.layers = Block(config, rngs)
        self.final_norm = param(None, (c.hidden_size,), ("norm",), c, "ones")
        self.lm_head = (
            None
            if c.tie_word_embeddings
            else param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), c)
        )

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        attention_mask: jax.Array,
        cache: KVCache | None = None,
        *,
        window: int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """tokens, positions [B, T] int32, attention_mask [B, T] bool -> (hidden [B, T, D], cache).

        Without a cache, token j attends to the real tokens 0..j. With one, the tokens are
        written at slot `cache.index` and attend to its valid slots (see `cache.py`); the
        updated cache is returned, else None. `window` (static, cache only) limits attention
        to slots [0, window): the caller promises `cache.index + T <= window`, and attention
        then reads window slots instead of the whole cache (the sampler's prefill reads the
        prompt only, its decode loop a window that grows with the generation).
        """
        cfg = self.config
        dtype = cfg.compute_dtype
        x = jnp.take(self.embed[...], tokens, axis=0).astype(dtype)
        x = constrain(x, _HIDDEN_AXES)
        sin, cos = rope_sin_cos(positions, rope_inv_freq(cfg), dtype)
        attention_mask = attention_mask.astype(jnp.bool_)
        if cache is None:
            index = jnp.zeros((), jnp.int32)
            valid = attention_mask
        else:
            index = cache.index
            valid = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, index))
        if window is not None and not 0 < window <= valid.shape[1]:
            raise ValueError(f"window must be in [1, {valid.shape[1]}] (cache slots), got {window}")
        key_valid = valid if window is None else valid[:, :window]
        impl = attention.resolve(cfg, tokens.shape[1], key_valid.shape[1],
                                 cached=cache is not None)
        dense = (attention.dense_mask(key_valid, tokens.shape[1], index) if impl == "dense"
                 else None)
        mask = AttentionMask(key_valid, index, dense)

        graphdef, stacked = nnx.split(self.layers)

        def layer(carry, xs):
            x, cache_k, cache_v = carry
            layer_params, i = xs
            block = nnx.merge(graphdef, layer_params)
            kv = None if cache_k is None else (cache_k, cache_v)
            x, cache_k, cache_v = block(x, sin, cos, mask, kv, i, index, window, impl)
            return (constrain(x, _HIDDEN_AXES), cache_k, cache_v), None

        if cfg.remat != "none":
            layer = jax.checkpoint(layer, policy=REMAT[cfg.remat])
        carry = (x, None, None) if cache is None else (x, cache.k, cache.v)
        (x, cache_k, cache_v), _ = jax.lax.scan(layer, carry, (stacked, jnp.arange(cfg.num_layers)))
        hidden = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
        if cache is None:
            return hidden, None
        new_cache = KVCache(k=cache_k, v=cache_v, mask=valid, index=index + tokens.shape[1])
        return hidden, constrain_cache(new_cache)

    def lm_head_weight(self) -> jax.Array:
        """The output projection [D, V] in param dtype (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed[...].T
        return self.lm_head[...]

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, D] -> float32 logits [B, T, V] (compute-dtype matmul, f32 accumulation)."""
        w = self.lm_head_weight().astype(hidden.dtype)
        return jnp.einsum("btd,dv->btv", hidden, w, preferred_element_type=jnp.float32)


def forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
    cache: KVCache | None = None,
    *,
    window: int | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Pure `Transformer.__call__` on `nnx.split(model)`: -> (hidden [B, T, D], cache)."""
    return nnx.merge(graphdef, state)(tokens, positions, attention_mask, cache, window=window)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """RoPE positions [B, T] int32 for a (left-)padded mask [B, T]: 0, 1, ... over real tokens."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """A randomly initialized model (weights N(0, init_std^2), norms 1, biases 0)."""
    return Transformer(config, rngs=nnx.Rngs(seed))
