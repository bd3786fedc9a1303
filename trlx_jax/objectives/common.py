"""Pieces shared by the policy losses: capped log-ratio, KL to the reference, the final reduce."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from trlx_jax.objectives.aggregation import aggregate
from trlx_jax.objectives.metrics import Metric

KL_ESTIMATORS = ("k1", "k3")


def capped_log_ratio(logp: jax.Array, old_logp: jax.Array, cap: float) -> jax.Array:
    """[B, T] log pi, [B, T] log mu -> log(pi / mu) clipped to [-cap, cap] (safe to exp)."""
    return jnp.clip(logp - old_logp, -cap, cap)


def reference_kl(logp: jax.Array, ref_logp: jax.Array, estimator: str, cap: float) -> jax.Array:
    """[B, T] log pi, [B, T] log pi_ref -> per-token estimate of KL(pi || pi_ref) (k1 or k3)."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        # Schulman's low-variance estimator: r - 1 - log r with r = pi_ref / pi, always >= 0.
        log_r = capped_log_ratio(ref_logp, logp, cap)
        return jnp.exp(log_r) - 1.0 - log_r
    raise ValueError(f"unknown kl_estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


def reduce(
    per_token: jax.Array,
    batch: Mapping[str, jax.Array],
    cfg: ml_collections.ConfigDict,
    metrics: dict[str, Metric],
) -> tuple[jax.Array, jax.Array, dict[str, Metric]]:
    """[B, T] policy terms -> (loss_sum, denominator, metrics), adding cfg.kl_coef * KL to ref.

    The KL term needs `ref_logp` in the batch only when `cfg.kl_coef` is non-zero.
    """
    if cfg.kl_coef:
        if "ref_logp" not in batch:
            raise KeyError("kl_coef != 0 needs 'ref_logp' [B, T] in the loss batch")
        kl = reference_kl(batch["logp"], batch["ref_logp"], cfg.kl_estimator, cfg.log_ratio_cap)
        per_token = per_token + cfg.kl_coef * kl
        valid = batch["response_mask"].astype(bool)
        kl_ref = Metric.mean(kl, valid)
        metrics = {**metrics, "kl_ref": kl_ref}
    loss_sum, denominator = aggregate(
        per_token, batch["response_mask"], cfg.aggregation, cfg.norm_length
    )
    return loss_sum, denominator, metrics
