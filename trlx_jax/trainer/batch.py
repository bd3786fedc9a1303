"""The seam between rollout and losses: one train batch, one log-prob function, one loss batch.

A `TrainBatch` holds what a rollout leaves for the update: [prompt | response] tokens, the
response mask, advantages and the *behaviour* policy's record (`old`). `policy_logprobs` gives
the *current* policy's view of the same tokens (`new`), at the rollout's temperature and with
the run's single K. `loss_inputs` is the only place where the two meet the losses' key names,
so old and new can never be swapped.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from trlx_jax.models.transformer import forward, positions_from_mask
from trlx_jax.ops.logprobs import token_logprobs
from trlx_jax.rollout import Rollout


class PolicyRecord(NamedTuple):
    """One policy's log-probs on the response tokens: logp [N, T]; top-K [N, T, K] or None."""

    logp: jax.Array
    topk_ids: jax.Array | None = None
    topk_logp: jax.Array | None = None


class NewPolicy(NamedTuple):
    """The current policy on the response tokens (differentiable): the record, entropy [N, T]
    and its log-probs at the behaviour policy's top-K ids [N, T, K] (or None)."""

    record: PolicyRecord
    entropy: jax.Array
    logp_at_old_topk: jax.Array | None


class TrainBatch(NamedTuple):
    """N rollout rows ready for updates.

    tokens / attention_mask [N, P + T] (left-padded prompt, then the response); response_mask
    [N, T]; advantages [N] float32; old: the behaviour policy's record; ref_logp [N, T] under
    the frozen reference policy (None without a KL-to-reference term).
    """

    tokens: jax.Array
    attention_mask: jax.Array
    response_mask: jax.Array
    advantages: jax.Array
    old: PolicyRecord
    ref_logp: jax.Array | None = None

    @property
    def response_tokens(self) -> jax.Array:
        """[N, T] the sampled tokens."""
        return self.tokens[:, self.tokens.shape[1] - self.response_mask.shape[1] :]


@dataclasses.dataclass(frozen=True)
class LogProbSpec:
    """What the current policy's pass computes (static): temperature, its own top-K (0 = none),
    whether to gather at the behaviour top-K ids, and the tokens per log-softmax block."""

    temperature: float
    top_k: int = 0
    gather_old_topk: bool = False
    chunk_size: int = 1024


def train_batch(rollout: Rollout, advantages: jax.Array) -> TrainBatch:
    """A Rollout and its advantages [N] -> the TrainBatch (behaviour record from the sampler)."""
    return TrainBatch(
        tokens=jnp.concatenate([rollout.prompt_tokens, rollout.tokens], axis=1),
        attention_mask=jnp.concatenate([rollout.prompt_mask, rollout.response_mask], axis=1),
        response_mask=rollout.response_mask,
        advantages=advantages.astype(jnp.float32),
        old=PolicyRecord(rollout.logp, rollout.topk_ids, rollout.topk_logp),
    )


def policy_logprobs(
    graphdef: nnx.GraphDef, params: nnx.State, batch: TrainBatch, spec: LogProbSpec
) -> NewPolicy:
    """The policy `params` on the batch's response tokens: log-probs, entropy, top-K, gathers."""
    mask = batch.attention_mask
    hidden, _ = forward(graphdef, params, batch.tokens, positions_from_mask(mask), mask)
    length = batch.response_mask.shape[1]
    # Position j predicts token j + 1: the response's predictions start at the last prompt slot.
    hidden = hidden[:, -length - 1 : -1]
    head = nnx.merge(graphdef, params).lm_head_weight()
    gather = batch.old.topk_ids if spec.gather_old_topk else None
    out = token_logprobs(
        hidden, head, batch.response_tokens, temperature=spec.temperature, top_k=spec.top_k,
        gather_ids=gather, chunk_size=spec.chunk_size,
    )
    return NewPolicy(PolicyRecord(out.logp, out.topk_ids, out.topk_logp), out.entropy,
                     out.gathered_logp)


def loss_inputs(batch: TrainBatch, new: NewPolicy, vocab_size: int) -> dict[str, jax.Array]:
    """The key-named batch of `trlx_jax.objectives` from the typed old and new policies."""
    inputs = {
        "logp": new.record.logp,
        "old_logp": batch.old.logp,
        "advantages": batch.advantages,
        "response_mask": batch.response_mask,
        "sampled_ids": batch.response_tokens,
        "entropy": new.entropy,
        "vocab_size": jnp.asarray(vocab_size, jnp.int32),
    }
    optional = {
        "old_topk_ids": batch.old.topk_ids,
        "old_topk_logp": batch.old.topk_logp,
        "topk_ids": new.record.topk_ids,
        "topk_logp": new.record.topk_logp,
        "logp_at_old_topk": new.logp_at_old_topk,
        "ref_logp": batch.ref_logp,
    }
    inputs.update({k: v for k, v in optional.items() if v is not None})
    return inputs


def shuffled_minibatches(batch: TrainBatch, key: jax.Array, num_minibatches: int) -> TrainBatch:
    """A random permutation of the N rows as [num_minibatches, N / num_minibatches, ...]."""
    n = batch.tokens.shape[0]
    if n % num_minibatches:
        raise ValueError(f"{n} rollout rows do not split into {num_minibatches} minibatches")
    order = jax.random.permutation(key, n)
    return jax.tree.map(
        lambda x: x[order].reshape(num_minibatches, n // num_minibatches, *x.shape[1:]), batch
    )


def split_microbatches(batch: TrainBatch, num_microbatches: int) -> TrainBatch:
    """[M, ...] rows -> [num_microbatches, M / num_microbatches, ...], interleaved: micro-batch i
    takes rows i, i + k, ..., so every data shard holds rows of every micro-batch."""
    m = batch.tokens.shape[0]
    if m % num_microbatches:
        raise ValueError(f"a minibatch of {m} rows does not split into {num_microbatches} "
                         "microbatches")
    return jax.tree.map(
        lambda x: x.reshape(m // num_microbatches, num_microbatches, *x.shape[1:]).swapaxes(0, 1),
        batch,
    )
