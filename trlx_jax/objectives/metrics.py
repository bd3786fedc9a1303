"""The standard metrics bundle every policy loss returns: masked means over response tokens.

Fractions are shares of all response tokens in the batch, so `clip_frac_pos + clip_frac_neg ==
clip_frac` (A = 0 counts on the negative side, as in the DPPO mask). Padding never enters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trlx_jax.objectives.dppo import broadcast_advantages


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """[B, T] values, [B, T] bool -> scalar mean over valid entries (0 if there are none)."""
    total = jnp.where(valid, x, 0.0).sum()
    return total / jnp.maximum(valid.sum(), 1)


def policy_metrics(
    *,
    log_ratio: jax.Array,
    advantages: jax.Array,
    response_mask: jax.Array,
    clipped: jax.Array,
    entropy: jax.Array | None = None,
    divergence: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """[B, T] capped log(pi / mu), [B] or [B, T] A, [B, T] mask and clipped flags (+ [B, T]
    entropy, DPPO divergence) -> dict of float32 scalars.

    Keys: num_tokens, clip_frac(_pos/_neg) (tokens whose gradient the trust region removed),
    ratio_mean/min/max, abs_log_ratio_mean, approx_kl (k3 estimate of KL(mu || pi), samples
    from mu), entropy, divergence_mean, divergence_max.
    """
    valid = response_mask.astype(bool)
    log_ratio = jax.lax.stop_gradient(log_ratio).astype(jnp.float32)
    positive = broadcast_advantages(advantages, log_ratio) > 0
    clipped = clipped.astype(bool) & valid
    ratio = jnp.exp(log_ratio)
    any_valid = valid.any()
    out = {
        "num_tokens": valid.sum().astype(jnp.float32),
        "clip_frac": masked_mean(clipped, valid),
        "clip_frac_pos": masked_mean(clipped & positive, valid),
        "clip_frac_neg": masked_mean(clipped & ~positive, valid),
        "ratio_mean": masked_mean(ratio, valid),
        "ratio_min": jnp.where(any_valid, jnp.where(valid, ratio, jnp.inf).min(), 0.0),
        "ratio_max": jnp.where(any_valid, jnp.where(valid, ratio, -jnp.inf).max(), 0.0),
        "abs_log_ratio_mean": masked_mean(jnp.abs(log_ratio), valid),
        # k3 with r = pi/mu: (r - 1) - log r >= 0, unbiased for KL(mu || pi) under mu.
        "approx_kl": masked_mean(ratio - 1.0 - log_ratio, valid),
    }
    if entropy is not None:
        out["entropy"] = masked_mean(jax.lax.stop_gradient(entropy), valid)
    if divergence is not None:
        d = jax.lax.stop_gradient(divergence).astype(jnp.float32)
        out["divergence_mean"] = masked_mean(d, valid)
        out["divergence_max"] = jnp.where(any_valid, jnp.where(valid, d, -jnp.inf).max(), 0.0)
    return {k: v.astype(jnp.float32) for k, v in out.items()}
