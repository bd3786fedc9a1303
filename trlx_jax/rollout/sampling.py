"""Per-step token selection: temperature, top-k, top-p, greedy; and what the sampler records.

Recorded values (the contract with the losses): the log-prob of the sampled token and the top-K
ids/log-probs are taken from `log_softmax(logits / temperature)` over the FULL vocabulary, i.e.
with temperature but WITHOUT top-p/top-k truncation. This is exactly what the trainer's chunked
log-prob op computes for the current policy (same temperature, full vocabulary), so the ratio
`logp - old_logp` is zero at the start of an update with unchanged weights, and DPPO/TROLL
compare like with like. Truncation only decides which tokens may be drawn. Greedy decoding
records the temperature-1 distribution's values when `temperature` is 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Static sampling settings; `temperature == 0` means greedy decoding.

    top_k: keep the k most likely tokens (0 = off). top_p: keep the smallest set whose mass
    reaches top_p (1.0 = off). record_top_k: how many top log-probs to record per token (0 = off).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    record_top_k: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.record_top_k < 0:
            raise ValueError(f"record_top_k must be >= 0 (0 = off), got {self.record_top_k}")

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax."""
        return self.temperature == 0.0


def scaled_logprobs(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """[..., V] logits -> float32 log_softmax(logits / T) over the full vocabulary (greedy: T=1)."""
    temperature = 1.0 if params.greedy else params.temperature
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def truncate(logp: jax.Array, params: SamplingParams) -> jax.Array:
    """[..., V] log-probs -> the same with tokens outside top-k / top-p set to NEG_INF."""
    vocab = logp.shape[-1]
    if params.top_k and params.top_k < vocab:
        kth = jax.lax.top_k(logp, params.top_k)[0][..., -1:]
        logp = jnp.where(logp >= kth, logp, NEG_INF)
    if params.top_p < 1.0:
        sorted_logp = jnp.sort(logp, axis=-1)[..., ::-1]
        # Renormalized after top-k, as in HF's warper order (temperature, top-k, top-p).
        probs = jax.nn.softmax(sorted_logp, axis=-1)
        # Mass strictly before each sorted token: keep a token while that is below top_p, so the
        # most likely token is always kept and the kept set is the smallest reaching top_p.
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = mass_before < params.top_p
        threshold = jnp.min(jnp.where(kept, sorted_logp, jnp.inf), axis=-1, keepdims=True)
        logp = jnp.where(logp >= threshold, logp, NEG_INF)
    return logp


def select_tokens(
    key: jax.Array, logits: jax.Array, params: SamplingParams
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """[B, V] logits -> (tokens [B] int32, logp [B], topk_ids [B,K] | None, topk_logp [B,K] | None).

    logp and the top-K are the recorded (temperature-scaled, untruncated) values.
    """
    logp_full = scaled_logprobs(logits, params)
    if params.greedy:
        tokens = jnp.argmax(logp_full, axis=-1)
    else:
        tokens = jax.random.categorical(key, truncate(logp_full, params), axis=-1)
    tokens = tokens.astype(jnp.int32)
    logp = jnp.take_along_axis(logp_full, tokens[:, None], axis=-1)[:, 0]
    if params.record_top_k == 0:
        return tokens, logp, None, None
    k = min(params.record_top_k, logits.shape[-1])
    topk_logp, topk_ids = jax.lax.top_k(logp_full, k)
    return tokens, logp, topk_ids.astype(jnp.int32), topk_logp
