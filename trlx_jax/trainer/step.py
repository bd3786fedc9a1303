"""The pure, jitted train steps: `rl_train_step(state, batch)` and `sft_train_step(state, batch)`.

An RL step is the whole update phase of one rollout batch: `epochs` passes, each a fresh
shuffle into `minibatches` optimizer updates, each update accumulated over `microbatches`.
Gradients of the losses' unreduced sums are summed over micro-batches and divided once by the
minibatch's total denominator, so accumulation equals the unsplit minibatch for every
aggregation mode; loss metrics are (sum, count) pairs merged the same way. Each step is
compiled once per shape with the state's shardings in and out and the state donated.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trlx_jax.objectives import policy_loss
from trlx_jax.objectives.metrics import Metric
from trlx_jax.trainer.batch import (
    LogProbSpec,
    TrainBatch,
    loss_inputs,
    policy_logprobs,
    shuffled_minibatches,
    split_microbatches,
)
from trlx_jax.trainer.state import TrainState, replicated

StepFn = Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]


class SFTBatch(NamedTuple):
    """Supervised rows: tokens / attention_mask [N, P + C] (left-padded prompt, then the target
    completion), response_mask [N, C] True on target tokens."""

    tokens: jax.Array
    attention_mask: jax.Array
    response_mask: jax.Array

    @property
    def response_tokens(self) -> jax.Array:
        """[N, C] the target tokens."""
        return self.tokens[:, self.tokens.shape[1] - self.response_mask.shape[1] :]


@dataclasses.dataclass(frozen=True)
class UpdateSchedule:
    """How one rollout batch becomes optimizer updates (static)."""

    epochs: int = 1
    minibatches: int = 1
    microbatches: int = 1

    @property
    def updates(self) -> int:
        """Optimizer updates per rollout batch."""
        return self.epochs * self.minibatches


def _stack_merge(metrics: dict[str, Metric]) -> dict[str, Metric]:
    """Metrics with a leading stacked axis -> one merged Metric each."""
    reducers = {"mean": jnp.sum, "sum": jnp.sum, "max": jnp.max, "min": jnp.min}
    return {
        k: Metric(reducers[m.kind](m.total, axis=0), m.count.sum(axis=0), m.kind)
        for k, m in metrics.items()
    }


def batch_shardings(batch: Any, mesh: Mesh) -> Any:
    """Every batch leaf sharded over ("data", "fsdp") on its leading (row) axis."""
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    return jax.tree.map(lambda _: sharding, batch)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """The batch placed with `batch_shardings` (rows over the data axes), as the steps expect."""
    return jax.device_put(batch, batch_shardings(batch, mesh))


def _accumulate(
    micro_loss: Callable, params: nnx.State, micro: Any
) -> tuple[nnx.State, jax.Array, jax.Array, dict[str, Metric]]:
    """Scans micro-batches: (sum of grads of loss sums, loss sum, denominator, merged metrics)."""

    def body(grad_sum, mb):
        (loss_sum, (denominator, metrics)), grads = jax.value_and_grad(micro_loss, has_aux=True)(
            params, mb
        )
        return jax.tree.map(jnp.add, grad_sum, grads), (loss_sum, denominator, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grad_sum, (loss_sums, denominators, metrics) = jax.lax.scan(body, zeros, micro)
    return grad_sum, loss_sums.sum(), denominators.sum(), _stack_merge(metrics)


NONFINITE_KEYS = ("nonfinite/logp", "nonfinite/old_logp", "nonfinite/old_topk_logp",
                  "nonfinite/advantages")


def nonfinite_counts(new_logp: jax.Array, mb: TrainBatch) -> dict[str, Metric]:
    """Counts of non-finite values a loss would turn into a NaN loss (or hide behind a `where`):
    current and behaviour log-probs [N, T] on response tokens, NaN in the behaviour top-K, and
    advantages of rows with response tokens (NaN rewards end up there)."""
    valid = mb.response_mask.astype(bool)

    def count(bad: jax.Array) -> Metric:
        return Metric.sum(jnp.sum(bad))

    rows = valid.any(axis=-1) if mb.advantages.ndim == 1 else valid
    topk = mb.old.topk_logp
    return {
        "nonfinite/logp": count(valid & ~jnp.isfinite(new_logp)),
        "nonfinite/old_logp": count(valid & ~jnp.isfinite(mb.old.logp)),
        "nonfinite/old_topk_logp": count(jnp.zeros((), bool) if topk is None else
                                         valid[..., None] & jnp.isnan(topk)),
        "nonfinite/advantages": count(rows & ~jnp.isfinite(mb.advantages)),
    }


def _apply(
    tx: optax.GradientTransformation, state: TrainState, grad_sum: nnx.State, denominator
) -> tuple[TrainState, jax.Array]:
    """One optimizer update with the gradient grad_sum / denominator; -> (state, grad norm)."""
    scale = jnp.where(denominator > 0, 1.0 / jnp.where(denominator > 0, denominator, 1.0), 0.0)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grad_sum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new, optax.tree.norm(grads)


def _jit_step(fn: Callable, mesh: Mesh, state_shardings: TrainState, batch_example: Any) -> StepFn:
    """`fn(state, batch)` compiled with the state's shardings in and out, rows of the batch over
    the data axes, replicated metrics, and the state donated."""
    return jax.jit(
        fn,
        in_shardings=(state_shardings, batch_shardings(batch_example, mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=0,
    )


def make_rl_train_step(
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_name: str,
    loss_cfg: ml_collections.ConfigDict,
    logprob_spec: LogProbSpec,
    vocab_size: int,
    updates: UpdateSchedule,
    mesh: Mesh,
    state_shardings: TrainState,
    batch_example: TrainBatch,
) -> StepFn:
    """The jitted `rl_train_step(state, batch) -> (state, metrics)` (batch: the rollout's N rows).

    metrics: every loss metric merged over all updates, `loss` and `grad_norm` (means over the
    updates), `grad_norm_max`, `lr` (of the last update), `skipped_updates` (updates whose loss,
    gradient or inputs were not finite: skipped, the state left as it was), the counts
    `nonfinite/*` of `nonfinite_counts` summed over the updates, and
    `mismatch/abs_log_ratio_mean|max` of the first minibatch, taken before any update: the
    sampler-vs-trainer log-prob mismatch.
    """
    loss_fn = policy_loss(loss_name)

    def micro_loss(params: nnx.State, mb: TrainBatch):
        new = policy_logprobs(graphdef, params, mb, logprob_spec)
        loss_sum, denominator, metrics = loss_fn(loss_inputs(mb, new, vocab_size), loss_cfg)
        valid = mb.response_mask.astype(bool)
        abs_log_r = jnp.abs(new.record.logp - mb.old.logp)
        metrics = {**metrics, "abs_log_ratio_max": Metric.max(abs_log_r, valid),
                   **nonfinite_counts(new.record.logp, mb)}
        return loss_sum, (denominator, metrics)

    def minibatch_update(state: TrainState, mb: TrainBatch):
        micro = split_microbatches(mb, updates.microbatches)
        grad_sum, loss_sum, denominator, metrics = _accumulate(micro_loss, state.params, micro)
        lr = schedule(state.step)
        updated, grad_norm = _apply(tx, state, grad_sum, denominator)
        loss = jnp.where(denominator > 0, loss_sum / jnp.maximum(denominator, 1e-30), 0.0)
        # A non-finite loss, gradient or input skips the update: the state stays as it was.
        bad_inputs = sum(metrics[k].total for k in NONFINITE_KEYS) > 0
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & ~bad_inputs
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        state = state.replace(params=keep(updated.params, state.params),
                              opt_state=keep(updated.opt_state, state.opt_state),
                              step=keep(updated.step, state.step))
        return state, (metrics, loss, grad_norm, lr, ~finite)

    def rl_train_step(state: TrainState, batch: TrainBatch):
        key, shuffle_key = jax.random.split(state.key)
        state = state.replace(key=key)
        per_epoch = []
        for epoch in range(updates.epochs):
            mbs = shuffled_minibatches(batch, jax.random.fold_in(shuffle_key, epoch),
                                       updates.minibatches)
            state, out = jax.lax.scan(minibatch_update, state, mbs)
            per_epoch.append(out)
        metrics, losses, grad_norms, lrs, skipped = jax.tree.map(
            lambda *xs: jnp.concatenate(xs), *per_epoch
        )
        first = {k: jax.tree.map(lambda x: x[0], m) for k, m in metrics.items()}
        values = {k: m.value() for k, m in _stack_merge(metrics).items()}
        values.update(
            loss=losses.mean(),
            grad_norm=grad_norms.mean(),
            grad_norm_max=grad_norms.max(),
            lr=lrs[-1],
            skipped_updates=skipped.sum().astype(jnp.float32),
        )
        values["mismatch/abs_log_ratio_mean"] = first["abs_log_ratio_mean"].value()
        values["mismatch/abs_log_ratio_max"] = first["abs_log_ratio_max"].value()
        return state, values

    return _jit_step(rl_train_step, mesh, state_shardings, batch_example)


def make_sft_train_step(
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    state_shardings: TrainState,
    batch_example: SFTBatch,
    chunk_size: int = 1024,
) -> StepFn:
    """The jitted `sft_train_step(state, batch) -> (state, metrics)`: one update on the token
    mean negative log-likelihood of the target tokens; metrics loss, grad_norm, lr, tokens."""
    spec = LogProbSpec(temperature=1.0, chunk_size=chunk_size)

    def nll(params: nnx.State, batch: SFTBatch):
        new = policy_logprobs(graphdef, params, batch, spec)
        valid = batch.response_mask.astype(bool)
        loss_sum = -jnp.where(valid, new.record.logp, 0.0).sum()
        return loss_sum, (valid.sum().astype(jnp.float32), {})

    def sft_train_step(state: TrainState, batch: SFTBatch):
        micro = jax.tree.map(lambda x: x[None], batch)
        grad_sum, loss_sum, denominator, _ = _accumulate(nll, state.params, micro)
        lr = schedule(state.step)
        state, grad_norm = _apply(tx, state, grad_sum, denominator)
        return state, {"loss": loss_sum / jnp.maximum(denominator, 1.0), "grad_norm": grad_norm,
                       "lr": lr, "tokens": denominator}

    return _jit_step(sft_train_step, mesh, state_shardings, batch_example)
