"""Advantage estimators, policy losses and aggregation, looked up by name.

`policy_loss(name)` returns `fn(batch, cfg) -> (loss_sum, denominator, metrics)`;
`advantage_estimator(name)` returns
`fn(rewards [N], *, group_size=None, group_ids=None, eps=1e-6) -> advantages [N]`.

Loss batch keys ([B, T] unless noted): `logp` (current policy, differentiable), `old_logp`
(behaviour log-probs recorded by the sampler), `advantages` ([B] or [B, T]), `response_mask`,
`sampled_ids` (int32); optional `entropy`, `ref_logp`; top-K: `old_topk_ids`, `old_topk_logp`
(the rollout's top-K, [B, T, K]), `logp_at_old_topk` (current policy there, [B, T, K]),
`topk_ids`, `topk_logp` (the current policy's own top-K, [B, T, K]); the TROLL losses also
need `vocab_size` (a scalar V: the lumped tail slot holds the V - |U| tokens no policy kept).
"""

from __future__ import annotations

from collections.abc import Callable

from trlx_jax.registry import Registry

POLICY_LOSSES: Registry[Callable] = Registry("policy loss")
ADVANTAGE_ESTIMATORS: Registry[Callable] = Registry("advantage estimator")

# Modules that register entries on import; listed here so lookups see every entry.
_REGISTERING_MODULES = (
    "trlx_jax.objectives.advantages",
    "trlx_jax.objectives.losses",
    "trlx_jax.objectives.troll",
)


def _load_all() -> None:
    import importlib

    for module in _REGISTERING_MODULES:
        importlib.import_module(module)


def policy_loss(name: str) -> Callable:
    """The policy loss registered as `name`; unknown names raise a KeyError listing valid ones."""
    _load_all()
    return POLICY_LOSSES.get(name)


def advantage_estimator(name: str) -> Callable:
    """The advantage estimator registered as `name`; unknown names list the valid ones."""
    _load_all()
    return ADVANTAGE_ESTIMATORS.get(name)
