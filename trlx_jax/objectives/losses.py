"""Registered policy losses: clip (PPO/GRPO), gspo, cispo and the four DPPO variants.

Each is `fn(batch, cfg) -> (loss_sum, denominator, metrics)`; the batch keys are documented in
`trlx_jax.objectives` and each loss reads only the ones it needs. The behaviour log-probs
`old_logp` recorded by the sampler are the anchor mu of every ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from trlx_jax.objectives import POLICY_LOSSES, dppo
from trlx_jax.objectives.common import capped_log_ratio, check_loss_inputs, reduce
from trlx_jax.objectives.metrics import Metric, policy_metrics

Batch = Mapping[str, jax.Array]
LossOutput = tuple[jax.Array, jax.Array, dict[str, Metric]]

# Paper defaults of delta per divergence family (specs/dppo.md section 3).
DPPO_DEFAULT_DELTA = {"tv": 0.15, "kl": 0.05}


def _advantages(batch: Batch) -> jax.Array:
    """Advantages broadcastable against [B, T] (a [B] array becomes [B, 1])."""
    return dppo.broadcast_advantages(batch["advantages"], batch["logp"])


def _clipped_surrogate(
    ratio: jax.Array, advantages: jax.Array, eps_low: float, eps_high: float
) -> jax.Array:
    """PPO's pessimistic per-token loss max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))."""
    return jnp.maximum(
        -advantages * ratio, -advantages * jnp.clip(ratio, 1 - eps_low, 1 + eps_high)
    )


@POLICY_LOSSES.register("clip")
def clip_loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
    """PPO/GRPO clipped surrogate with clip-higher (eps_low, eps_high) and dual clip c."""
    check_loss_inputs("clip", batch, cfg)
    logp, old_logp, mask = batch["logp"], batch["old_logp"], batch["response_mask"]
    adv = _advantages(batch)
    log_ratio = capped_log_ratio(logp, old_logp, cfg.log_ratio_cap)
    ratio = jnp.exp(log_ratio)
    per_token = _clipped_surrogate(ratio, adv, cfg.eps_low, cfg.eps_high)
    # Dual clip bounds the loss of A < 0 tokens at -A * c; c = inf leaves it off (and the where
    # keeps 0 * inf out of the A >= 0 tokens).
    bound = jnp.where(adv < 0, -adv * cfg.dual_clip_c, jnp.inf)
    dual = (adv < 0) & (ratio > cfg.dual_clip_c)
    per_token = jnp.minimum(per_token, bound)
    # With D = |r - 1| and delta = eps the DPPO mask is exactly PPO's clip region.
    kept = dppo.mask(jnp.abs(ratio - 1), logp, old_logp, adv, mask, cfg.eps_low, cfg.eps_high)
    metrics = policy_metrics(
        log_ratio=log_ratio,
        advantages=adv,
        response_mask=mask,
        clipped=(kept == 0) | dual,
        entropy=batch.get("entropy"),
    )
    metrics["dual_clip_frac"] = Metric.mean(dual, mask.astype(bool))
    return reduce(per_token, batch, cfg, metrics)


@POLICY_LOSSES.register("gspo")
def gspo_loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
    """GSPO-token: the clip surrogate on the sequence ratio exp(mean_t log r), per token.

    Token t carries s_t = sg(s) * pi_t / sg(pi_t): its value is the sequence ratio s, its
    gradient s * dlog pi_t. With `seq-mean-token-mean` aggregation and sequence-level advantages
    this is exactly GSPO's sequence objective.
    """
    check_loss_inputs("gspo", batch, cfg)
    logp, old_logp, mask = batch["logp"], batch["old_logp"], batch["response_mask"]
    adv = _advantages(batch)
    valid = mask.astype(bool)
    token_log_ratio = jnp.where(valid, jax.lax.stop_gradient(logp) - old_logp, 0.0)
    seq_log_ratio = token_log_ratio.sum(-1, keepdims=True) / jnp.maximum(
        valid.sum(-1, keepdims=True), 1
    )
    log_s = jnp.minimum(seq_log_ratio + logp - jax.lax.stop_gradient(logp), cfg.gspo_log_ratio_cap)
    s = jnp.exp(log_s)
    per_token = _clipped_surrogate(s, adv, cfg.gspo_eps_low, cfg.gspo_eps_high)
    s_value = jax.lax.stop_gradient(s)
    zeros = jnp.zeros_like(log_s)
    kept = dppo.mask(
        jnp.abs(s_value - 1), log_s, zeros, adv, mask, cfg.gspo_eps_low, cfg.gspo_eps_high
    )
    metrics = policy_metrics(
        log_ratio=capped_log_ratio(logp, old_logp, cfg.log_ratio_cap),
        advantages=adv,
        response_mask=mask,
        clipped=kept == 0,
        entropy=batch.get("entropy"),
    )
    metrics["seq_ratio_mean"] = Metric.mean(s_value, valid)
    return reduce(per_token, batch, cfg, metrics)


def _truncated_is_loss(
    batch: Batch,
    cfg: ml_collections.ConfigDict,
    keep: jax.Array,
    divergence: jax.Array | None,
) -> LossOutput:
    """-A * sg(min(r, C)) * keep * log pi per token, with keep the 0/1 trust-region mask."""
    logp, old_logp, mask = batch["logp"], batch["old_logp"], batch["response_mask"]
    adv = _advantages(batch)
    log_ratio = capped_log_ratio(logp, old_logp, cfg.log_ratio_cap)
    ratio = jax.lax.stop_gradient(jnp.exp(log_ratio))
    weight = jnp.minimum(ratio, cfg.is_cap)
    # `where` instead of a product: a masked token with log pi = -inf must give 0, not NaN.
    per_token = jnp.where(keep > 0, -adv * weight * logp, 0.0)
    metrics = policy_metrics(
        log_ratio=log_ratio,
        advantages=adv,
        response_mask=mask,
        clipped=keep == 0,
        entropy=batch.get("entropy"),
        divergence=divergence,
    )
    metrics["is_truncated_frac"] = Metric.mean(ratio > cfg.is_cap, mask.astype(bool))
    return reduce(per_token, batch, cfg, metrics)


@POLICY_LOSSES.register("cispo")
def cispo_loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
    """CISPO: -A * sg(min(r, C)) * log pi on every response token (no mask), C = cfg.is_cap."""
    check_loss_inputs("cispo", batch, cfg)
    keep = batch["response_mask"].astype(batch["logp"].dtype)
    return _truncated_is_loss(batch, cfg, keep, divergence=None)


def _binary_divergence(fn: Callable[[jax.Array, jax.Array], jax.Array]):
    """Binary estimate from the sampled token's log-probs: fn(log pi(a_t), log mu(a_t))."""

    def divergence(batch: Batch) -> jax.Array:
        return fn(batch["logp"], batch["old_logp"])

    return divergence


def _topk_divergence(fn: Callable[[jax.Array, jax.Array], jax.Array]):
    """Top-K estimate over the rollout's top-K slots (+ sampled-token overwrite) and a rest."""

    def divergence(batch: Batch) -> jax.Array:
        logq_k, logmu_k = dppo.topk_slots(
            batch["old_topk_ids"],
            batch["old_topk_logp"],
            batch["logp_at_old_topk"],
            batch["sampled_ids"],
            batch["logp"],
            batch["old_logp"],
        )
        return fn(logq_k, logmu_k)

    return divergence


def _register_dppo(
    name: str, family: str, divergence_of: Callable[[Batch], jax.Array], keys: tuple[str, ...]
) -> None:
    """Registers dppo_<name>: the truncated-IS loss under the DPPO mask of one divergence."""

    def loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
        check_loss_inputs(f"dppo_{name}", batch, cfg, keys)
        default = DPPO_DEFAULT_DELTA[family]
        delta_low = default if cfg.delta_low is None else cfg.delta_low
        delta_high = default if cfg.delta_high is None else cfg.delta_high
        # D decides the mask only: no gradient flows through it.
        d = divergence_of(jax.tree.map(jax.lax.stop_gradient, dict(batch)))
        keep = dppo.mask(
            d,
            batch["logp"],
            batch["old_logp"],
            batch["advantages"],
            batch["response_mask"],
            delta_low,
            delta_high,
        )
        return _truncated_is_loss(batch, cfg, keep, divergence=d)

    loss.__name__ = loss.__qualname__ = f"dppo_{name}_loss"
    loss.__doc__ = f"DPPO with the {name.replace('_', '-')} divergence mask (specs/dppo.md)."
    POLICY_LOSSES.register(f"dppo_{name}")(loss)


_TOPK_KEYS = ("old_topk_ids", "old_topk_logp", "logp_at_old_topk", "sampled_ids")
_register_dppo("binary_tv", "tv", _binary_divergence(dppo.binary_tv), ())
_register_dppo("binary_kl", "kl", _binary_divergence(dppo.binary_kl), ())
_register_dppo("topk_tv", "tv", _topk_divergence(dppo.topk_tv), _TOPK_KEYS)
_register_dppo("topk_kl", "kl", _topk_divergence(dppo.topk_kl), _TOPK_KEYS)
