"""One small function per phase of an RL iteration: sample, score, advantages, log-probs, eval.

Host work (decoding, reward functions) happens here on NumPy data; device work is jitted and
returns device arrays, so the loop syncs only where tokens must reach the host.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from trlx_jax.data import RLBatch, call_reward
from trlx_jax.data.rewards import resolve_reward
from trlx_jax.models.sharding import SAMPLING_RULES, state_shardings
from trlx_jax.objectives import advantage_estimator
from trlx_jax.rollout import FINISH_LENGTH, Rollout, SamplingParams, generate
from trlx_jax.trainer import hosts
from trlx_jax.trainer.batch import LogProbSpec, PolicyRecord, TrainBatch, policy_logprobs
from trlx_jax.trainer.build import Components


def sampling_weights(parts: Components, params: nnx.State, layout: str) -> nnx.State:
    """The weights in their sampling layout: "gathered" (over fsdp, `SAMPLING_RULES`; no copy
    when fsdp is 1) or "training" (as they are: ZeRO-3 gathers each layer at every token)."""
    if layout == "training" or parts.mesh.shape["fsdp"] == 1:
        return params
    return jax.device_put(params, state_shardings(params, parts.mesh, SAMPLING_RULES))


def sample(
    parts: Components, params: nnx.State, batch: RLBatch, key: jax.Array, *,
    num_samples: int, max_new_tokens: int, sampling: SamplingParams | None = None,
    weights: str = "gathered",
) -> Rollout:
    """G = num_samples completions of every prompt of `batch` (rows grouped per prompt), with
    the weights in layout `weights` (see `sampling_weights`)."""
    tokens, mask = hosts.to_global((batch.prompts.tokens, batch.prompts.mask), parts.mesh)
    params = sampling_weights(parts, params, weights)
    with jax.set_mesh(parts.mesh):
        return generate(
            (parts.graphdef, params), tokens, mask, key=key,
            max_new_tokens=max_new_tokens, num_samples=num_samples,
            sampling=parts.sampling if sampling is None else sampling,
            stop_ids=parts.stop_ids, pad_id=parts.pad_id,
        )


def decode(tokenizer: Any, rollout: Rollout, mesh: Mesh | None = None) -> list[str]:
    """The completions as text (special tokens such as the stop token removed); with `mesh`,
    only this process's rows (see `hosts.local_rows`)."""
    tokens, lengths = (rollout.tokens, rollout.lengths)
    tokens, lengths = (np.asarray(tokens), np.asarray(lengths)) if mesh is None else \
        hosts.local_rows((tokens, lengths), mesh)
    return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(tokens, lengths,
                                                                       strict=True)],
                                  skip_special_tokens=True)


def repeat_rows(values: Sequence[Any], times: int) -> list[Any]:
    """Each element `times` times in a row (prompt metadata for its G samples)."""
    return [v for v in values for _ in range(times)]


@dataclasses.dataclass
class Scored:
    """Rewards of N completions: the total [N] float32, each term [N], accuracy [N] in {0, 1}."""

    completions: list[str]
    prompts: list[str]
    rewards: np.ndarray
    components: dict[str, np.ndarray]
    accuracy: np.ndarray


def score(parts: Components, batch: RLBatch, rollout: Rollout, num_samples: int) -> Scored:
    """Decodes this process's completions once and calls the reward terms on them with
    per-sample metadata (each process scores the rows of its own prompts)."""
    completions = decode(parts.tokenizer, rollout, parts.mesh)
    prompts = repeat_rows(batch.prompts.texts, num_samples)
    samples = [p + c for p, c in zip(prompts, completions, strict=True)]
    metadata = {k: repeat_rows(v, num_samples) for k, v in batch.metadata.items()}
    # float32 like the total (and like the gathered values of several processes).
    components = {k: np.asarray(v, np.float32) for k, v in
                  parts.reward.components(samples, prompts, completions, **metadata).items()}
    rewards = parts.reward.total(components).astype(np.float32)
    name = parts.accuracy_reward
    if name in components:
        accuracy = components[name]
    else:
        accuracy = call_reward(resolve_reward(name)[1], samples, prompts, completions, metadata,
                               name=name)
    return Scored(completions, prompts, rewards, components, accuracy.astype(np.float32))


@functools.partial(jax.jit, static_argnames=("estimator", "group_size", "eps"))
def advantages(rewards: jax.Array, *, estimator: str, group_size: int, eps: float) -> jax.Array:
    """[N] rewards, grouped G = group_size per prompt -> [N] float32 advantages."""
    return advantage_estimator(estimator)(rewards, group_size=group_size, eps=eps)


@functools.partial(jax.jit, static_argnums=(0, 3))
def policy_record(
    graphdef: nnx.GraphDef, params: nnx.State, batch: TrainBatch, spec: LogProbSpec
) -> PolicyRecord:
    """The record (log-probs, top-K) of `params` on the batch's responses, no gradient."""
    return jax.lax.stop_gradient(policy_logprobs(graphdef, params, batch, spec).record)


def check_rollout(rollout: Rollout, spec: LogProbSpec, needs_record: bool) -> None:
    """Refuses a rollout drawn at another temperature or with another K than the trainer's."""
    drawn = rollout.sampling
    if (drawn.temperature or 1.0) != (spec.temperature or 1.0):
        raise ValueError(
            f"the rollout was sampled at temperature {drawn.temperature} but the trainer computes "
            f"log-probs at {spec.temperature}: ratios would compare different distributions"
        )
    if spec.top_k and drawn.record_top_k != spec.top_k:
        raise ValueError(
            f"the rollout recorded top-{drawn.record_top_k} but the trainer's top-K is "
            f"{spec.top_k}: record_top_k and loss.troll_k must be the same K"
        )
    if needs_record and rollout.topk_ids is None:
        raise ValueError("this loss needs the rollout's top-K record: sample with "
                         "record_top_k >= 1")


def gathered(scored: Scored) -> Scored:
    """`scored` with rewards, reward terms and accuracy of every process's rows (for metrics);
    the texts stay this process's."""
    rewards, components, accuracy = hosts.gather_rows(
        (scored.rewards, scored.components, scored.accuracy))
    return dataclasses.replace(scored, rewards=rewards, components=components,
                               accuracy=accuracy)


def rollout_stats(parts: Components, rollout: Rollout, max_new_tokens: int) -> dict[str, float]:
    """Response length mean / max / total and the fraction that hit the length limit."""
    lengths, finish = hosts.gather_rows(
        hosts.local_rows((rollout.lengths, rollout.finish_reason), parts.mesh))
    hit_limit = finish == FINISH_LENGTH
    return {
        "response/length_mean": float(lengths.mean()),
        "response/length_max": float(lengths.max()),
        "response/tokens": float(lengths.sum()),
        "response/hit_length_limit_frac": float((hit_limit & (lengths >= max_new_tokens)).mean()),
    }


def reward_stats(scored: Scored, adv: np.ndarray, group_size: int) -> dict[str, float]:
    """Reward mean/std (total and per term), accuracy, advantage stats, mixed-group fraction
    (of `gathered` scores and advantages: every row of the global batch)."""
    out = {
        "reward/mean": float(scored.rewards.mean()),
        "reward/std": float(scored.rewards.std()),
        "accuracy": float(scored.accuracy.mean()),
        "advantage/mean": float(adv.mean()),
        "advantage/std": float(adv.std()),
        "advantage/abs_mean": float(np.abs(adv).mean()),
    }
    for name, values in scored.components.items():
        out[f"reward/{name}/mean"] = float(values.mean())
        out[f"reward/{name}/std"] = float(values.std())
    groups = scored.rewards.reshape(-1, group_size)
    # Only groups with unequal rewards carry a gradient under group-normalized advantages.
    out["reward/mixed_group_frac"] = float((groups.max(1) > groups.min(1)).mean())
    return out


def evaluate(
    parts: Components, params: nnx.State, batch: RLBatch, key: jax.Array, *,
    max_new_tokens: int, pass_k: int, samples_logged: int, weights: str = "gathered",
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy accuracy on `batch` (and pass@k with k samples at the rollout's sampling)."""
    greedy = dataclasses.replace(parts.sampling, temperature=0.0, top_k=0, top_p=1.0,
                                 record_top_k=0)
    params = sampling_weights(parts, params, weights)  # once for both samplings
    rollout = sample(parts, params, batch, key, num_samples=1, max_new_tokens=max_new_tokens,
                     sampling=greedy, weights="training")
    own = score(parts, batch, rollout, 1)
    scored = gathered(own)
    metrics = {"eval/accuracy": float(scored.accuracy.mean()),
               "eval/reward_mean": float(scored.rewards.mean()),
               "eval/num_problems": float(len(scored.accuracy))}
    metrics.update({f"eval/{k}": v for k, v in rollout_stats(parts, rollout, max_new_tokens)
                    .items() if k != "response/tokens"})
    if parts.metric_fn is not None:
        samples = [p + c for p, c in zip(own.prompts, own.completions, strict=True)]
        values = parts.metric_fn(samples, own.prompts, own.completions, **batch.metadata)
        metrics.update({f"eval/metrics/{k}": float(np.mean(hosts.gather_rows(
            np.asarray(v, np.float32)))) for k, v in values.items()})
    if pass_k > 0:
        sampling = dataclasses.replace(parts.sampling, record_top_k=0)
        many = sample(parts, params, batch, jax.random.fold_in(key, 1), num_samples=pass_k,
                      max_new_tokens=max_new_tokens, sampling=sampling, weights="training")
        correct = gathered(score(parts, batch, many, pass_k)).accuracy.reshape(-1, pass_k)
        metrics[f"eval/pass@{pass_k}"] = float((correct > 0).any(axis=1).mean())
    answers = batch.metadata.get("answer", [None] * len(own.prompts))
    rows = [
        {"prompt": own.prompts[i], "completion": own.completions[i],
         "answer": answers[i], "reward": float(own.rewards[i]),
         "correct": bool(own.accuracy[i] > 0)}
        for i in range(min(samples_logged, len(own.prompts)))
    ]
    return metrics, rows


def eval_batch(parts: Components, num_examples: int) -> RLBatch:
    """This process's share of the first `num_examples` test problems, as one prompt batch
    (with several processes, cut to a multiple of the mesh's batch shards)."""
    from trlx_jax.data import PromptIterator

    n = min(num_examples, len(parts.test_source))
    if hosts.multi_process():
        shards = parts.mesh.shape["data"] * parts.mesh.shape["fsdp"]
        n -= n % shards
    source = parts.test_source[:n]
    iterator = PromptIterator(source, parts.formatter, len(source), shuffle=False)
    return next(iterator)


def train_batch_with_logprobs(
    parts: Components, batch: TrainBatch, *, ref_params: nnx.State | None,
    old_params: nnx.State | None, spec: LogProbSpec,
) -> TrainBatch:
    """Adds the reference log-probs (KL term) and/or the recomputed behaviour record."""
    with jax.set_mesh(parts.mesh):
        if ref_params is not None:
            plain = dataclasses.replace(spec, top_k=0, gather_old_topk=False)
            batch = batch._replace(ref_logp=policy_record(parts.graphdef, ref_params, batch,
                                                          plain).logp)
        if old_params is not None:
            plain = dataclasses.replace(spec, gather_old_topk=False)
            batch = batch._replace(old=policy_record(parts.graphdef, old_params, batch, plain))
    return batch
