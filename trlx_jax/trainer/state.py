"""The train state pytree (params, optax state, step, PRNG key), the optimizer and shardings."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trlx_jax.models.sharding import state_shardings

SCHEDULES = ("constant", "cosine")


@struct.dataclass
class TrainState:
    """Everything an update changes: params, optimizer state, `step` (optimizer updates done,
    int32 scalar) and the PRNG `key` that shuffles minibatches."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    key: jax.Array


def lr_schedule(
    lr: float, warmup_steps: int, schedule: str, total_updates: int
) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then constant or cosine to 0 at the end."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps, max(total_updates, warmup_steps + 1), 0.0
        )
    if warmup_steps == 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
        [warmup_steps],
    )


def make_optimizer(
    cfg: ml_collections.ConfigDict, total_updates: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with global-norm clipping (grad_clip <= 0: off) and the schedule; from cfg keys
    lr, b1, b2, weight_decay, grad_clip, warmup_steps, schedule."""
    schedule = lr_schedule(cfg.lr, cfg.warmup_steps, cfg.schedule, total_updates)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw), schedule
    return adamw, schedule


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def create_state(
    params: nnx.State, tx: optax.GradientTransformation, key: jax.Array, mesh: Mesh
) -> tuple[TrainState, TrainState]:
    """(state, its shardings): params keep the rule table's shardings, the optimizer state is
    initialized under jit next to them. The params are copied: steps donate the state, and the
    caller's arrays (e.g. a reference policy) stay valid."""
    param_shardings = state_shardings(params, mesh)
    params = jax.device_put(params, param_shardings, may_alias=False)
    rep = replicated(mesh)
    # Adam's moments are laid out like their parameters (left to propagation, XLA replicates
    # them), the rest (counts) replicated.
    opt_shardings = optax.tree_map_params(
        tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), param_shardings,
        transform_non_params=lambda _: rep,
    )
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    state = TrainState(
        params=params,
        opt_state=opt_state,
        step=jax.device_put(np.zeros((), np.int32), rep),
        # Through host data: a device array cannot be put on devices of other processes.
        key=jax.random.wrap_key_data(jax.device_put(np.asarray(jax.random.key_data(key)), rep)),
    )
    shardings = TrainState(params=param_shardings, opt_state=opt_shardings, step=rep, key=rep)
    return state, shardings
