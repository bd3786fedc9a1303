"""TROLL policy losses (specs/troll.md section 4): `troll` and `troll_gspo`.

Per response token the new policy is projected onto the KL ball of radius `troll_eps` around the
old one, on the sparse top-K support (`trlx_jax.ops.sparse_support`), and the loss is

    -A * exp(log p(o_t) - log old(o_t))  +  troll_alpha * KL(new || sg(p))

with p the projected policy and old / new the sparse renormalized distributions: no clipping
and no clamp (the projection bounds the ratio), aggregated like every other loss. `troll_gspo`
replaces the token ratio by the detached sequence mean of log r (GSPO-token), capped at
`gspo_log_ratio_cap`. The regression term pulls the network itself into the trust region, so
TROLL changes training only, never sampling.

Beyond the common loss batch keys these read `sampled_ids`, `topk_ids` / `topk_logp` (the
current policy's own top-K, differentiable), `old_topk_ids` / `old_topk_logp`, with
`troll_new_logp_on_union` also `logp_at_old_topk`, and `vocab_size` (a scalar: the tail slot
holds the V - |U| tokens no policy kept). `troll_old_source` says where the train step took
the old top-K and `old_logp` from: the rollout's record (`rollout`) or a forward pass with the
parameters at the start of the update (`recompute`); the loss itself is the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from trlx_jax.objectives import POLICY_LOSSES
from trlx_jax.objectives.common import capped_log_ratio, check_loss_inputs, reduce
from trlx_jax.objectives.dppo import broadcast_advantages
from trlx_jax.objectives.metrics import Metric, policy_metrics
from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import sparse_support

Batch = Mapping[str, jax.Array]
LossOutput = tuple[jax.Array, jax.Array, dict[str, Metric]]
_KEYS = ("sampled_ids", "topk_ids", "topk_logp", "old_topk_ids", "old_topk_logp", "vocab_size")
def _troll(batch: Batch, cfg: ml_collections.ConfigDict, sequence_ratio: bool) -> LossOutput:
    """Shared body of `troll` and `troll_gspo`."""
    keys = _KEYS + (("logp_at_old_topk",) if cfg.troll_new_logp_on_union else ())
    check_loss_inputs("troll_gspo" if sequence_ratio else "troll", batch, cfg, keys)
    mask = batch["response_mask"].astype(bool)
    sg = jax.lax.stop_gradient

    # Padding positions may hold anything: finite dummies there, and `where` (not a product) so
    # that their gradient is exactly zero.
    def clean(key: str, differentiable: bool = True) -> jax.Array:
        x = batch[key] if differentiable else sg(batch[key])
        m = mask if x.ndim == mask.ndim else mask[..., None]
        return jnp.where(m, x, jnp.zeros((), x.dtype))

    support = sparse_support(
        clean("topk_ids"),
        clean("topk_logp"),
        clean("old_topk_ids"),
        clean("old_topk_logp", differentiable=False),
        clean("sampled_ids"),
        clean("logp"),
        clean("old_logp", differentiable=False),
        batch["vocab_size"],
        k=cfg.troll_k,
        delta=cfg.troll_delta,
        new_logp_at_old_topk=clean("logp_at_old_topk") if cfg.troll_new_logp_on_union else None,
        new_logp_on_union=cfg.troll_new_logp_on_union,
    )
    old = sg(support.b)
    proj, info = kl_projection(support.a, old, support.valid, cfg.troll_eps)

    def at_sampled(x: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, support.sampled_slot[..., None], axis=-1)[..., 0]

    logp_proj = at_sampled(proj)
    log_ratio = logp_proj - at_sampled(old)
    if sequence_ratio:
        count = jnp.maximum(mask.sum(-1, keepdims=True), 1)
        seq_log_ratio = jnp.where(mask, sg(log_ratio), 0.0).sum(-1, keepdims=True) / count
        log_ratio = jnp.minimum(logp_proj - sg(logp_proj) + seq_log_ratio, cfg.gspo_log_ratio_cap)
    adv = broadcast_advantages(batch["advantages"], log_ratio)
    pg = -adv * jnp.exp(log_ratio)
    # KL(new || sg(p)) over the support; exactly 0 where the projection is the identity.
    new_p = jnp.where(support.valid, jnp.exp(support.a), 0.0)
    reg_terms = jnp.where(support.valid, new_p * (support.a - sg(proj)), 0.0)
    reg = jnp.where(info.active, reg_terms.sum(-1), 0.0)
    per_token = pg + cfg.troll_alpha * reg

    metrics = policy_metrics(
        log_ratio=capped_log_ratio(batch["logp"], batch["old_logp"], cfg.log_ratio_cap),
        advantages=batch["advantages"],
        response_mask=mask,
        clipped=jnp.zeros_like(mask),
        entropy=batch.get("entropy"),
    )
    projected = info.active & mask
    troll_metrics = {
        "troll_projected_frac": Metric.mean(info.active, mask),
        "troll_kl_before_mean": Metric.mean(info.kl_before, mask),
        "troll_kl_before_max": Metric.max(info.kl_before, mask),
        "troll_kl_after_mean": Metric.mean(info.kl_after, mask),
        "troll_eta_mean": Metric.mean(info.eta, projected),
        "troll_violation_max": Metric.max(info.violation, mask),
        "troll_reg_mean": Metric.mean(sg(reg), mask),
        "troll_ratio_mean": Metric.mean(sg(jnp.exp(log_ratio)), mask),
    }
    metrics.update(troll_metrics)
    return reduce(per_token, batch, cfg, metrics)


@POLICY_LOSSES.register("troll")
def troll_loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
    """TROLL: token ratio of the projected to the sparse old policy, no clip, + alpha * KL."""
    return _troll(batch, cfg, sequence_ratio=False)


@POLICY_LOSSES.register("troll_gspo")
def troll_gspo_loss(batch: Batch, cfg: ml_collections.ConfigDict) -> LossOutput:
    """TROLL with GSPO-token sequence ratios (detached sequence mean of the projected log r)."""
    return _troll(batch, cfg, sequence_ratio=True)
