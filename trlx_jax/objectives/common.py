"""Pieces shared by the policy losses: input checks, capped log-ratio, KL to the reference, the
final reduce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from trlx_jax.checks import (
    Domain,
    MissingKeyError,
    check_floating,
    check_ids,
    check_rank,
    check_shape,
    check_value,
    require_keys,
)
from trlx_jax.objectives.aggregation import aggregate
from trlx_jax.objectives.config import KL_ESTIMATORS, check_loss_config
from trlx_jax.objectives.metrics import Metric

BASE_KEYS = ("logp", "old_logp", "advantages", "response_mask")
# Top-K id arrays [B, T, K] and the per-slot arrays that must share their K.
_TOPK_GROUPS = (("old_topk_ids", ("old_topk_logp", "logp_at_old_topk")),
                ("topk_ids", ("topk_logp",)))


def check_loss_inputs(
    owner: str, batch: Mapping[str, jax.Array], cfg: ml_collections.ConfigDict,
    keys: Sequence[str] = (),
) -> None:
    """Host-side checks of a loss call: settings in their domains, `BASE_KEYS` + `keys` (and
    `ref_logp` when kl_coef != 0) present, [B, T] / [B, T, K] shapes consistent, ids integer
    and (when concrete) in [0, vocab_size) on response tokens. Shapes only under jit."""
    check_loss_config(cfg)
    require_keys(batch, BASE_KEYS + tuple(keys), f"the {owner} loss")
    if cfg.kl_coef and "ref_logp" not in batch:
        raise MissingKeyError(f"kl_coef={cfg.kl_coef} needs 'ref_logp' [B, T] (the reference "
                              "policy's log-probs) in the loss batch; add it or set kl_coef=0")
    b, t = check_rank("logp", batch["logp"], 2, "[B, T]")
    check_floating("logp", batch["logp"])
    for key in ("old_logp", "response_mask", "entropy", "ref_logp", "sampled_ids"):
        if key in batch:
            check_shape(key, batch[key], (b, t), "[B, T]", "as logp")
    adv_rank = len(check_rank("advantages", batch["advantages"], (1, 2), "[B] or [B, T]"))
    check_shape("advantages", batch["advantages"], (b, t)[:adv_rank],
                "[B]" if adv_rank == 1 else "[B, T]", "as logp")
    vocab = batch.get("vocab_size")
    if vocab is not None:
        check_rank("vocab_size", vocab, 0, "a scalar (the vocabulary size V)")
        check_value("vocab_size", vocab, Domain(1, integer=True))
    mask = batch["response_mask"]
    if "sampled_ids" in batch:
        check_ids("sampled_ids", batch["sampled_ids"], vocab, where=mask, vocab_from="vocab_size")
    for ids_key, slot_keys in _TOPK_GROUPS:
        if ids_key not in batch:
            continue
        *_, k = check_shape(ids_key, batch[ids_key], (b, t, None), "[B, T, K]", "as logp")
        check_ids(ids_key, batch[ids_key], vocab, where=mask[..., None], vocab_from="vocab_size")
        for key in slot_keys:
            if key in batch:
                check_shape(key, batch[key], (b, t, k), "[B, T, K]", f"as {ids_key}")


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

    The KL term needs `ref_logp` in the batch only when `cfg.kl_coef` is non-zero (checked by
    `check_loss_inputs`).
    """
    if cfg.kl_coef:
        kl = reference_kl(batch["logp"], batch["ref_logp"], cfg.kl_estimator, cfg.log_ratio_cap)
        per_token = per_token + cfg.kl_coef * kl
        valid = batch["response_mask"].astype(bool)
        kl_ref = Metric.mean(kl, valid)
        metrics = {**metrics, "kl_ref": kl_ref}
    loss_sum, denominator = aggregate(
        per_token, batch["response_mask"], cfg.aggregation, cfg.norm_length
    )
    return loss_sum, denominator, metrics
