"""A run's real token distributions under TROLL's projection and DPPO's masks.

From a run directory: the model of its config with the parameters of its two latest checkpoints,
the older one as the behaviour (old) policy and the newer one as the current (new) policy. The
old policy samples a rollout of training prompts (recording its top-K, as the trainer's sampler
does), the run's rewards and advantage estimator score it, and the new policy is evaluated on
the same tokens. Then, per response token and with the run's settings (K, delta, eps, DPPO
deltas), exactly the functions the losses call: `sparse_support` + `kl_projection` (TROLL) and
the four DPPO divergences + `dppo.mask`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from trlx_jax.analysis.demo import config_file
from trlx_jax.config import flat_keys, load_config, load_saved_config
from trlx_jax.data import PromptIterator
from trlx_jax.objectives import dppo
from trlx_jax.objectives.losses import DPPO_DEFAULT_DELTA
from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import sparse_support
from trlx_jax.trainer import phases
from trlx_jax.trainer.batch import LogProbSpec, TrainBatch, policy_logprobs, train_batch
from trlx_jax.trainer.build import Components, build
from trlx_jax.trainer.checkpoint import CHECKPOINT_DIR

TAIL = -1  # the token id of the lumped-tail slot in `TokenView.slot_ids`
DPPO_VARIANTS = ("binary_tv", "binary_kl", "topk_tv", "topk_kl")


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """TFDS and orbax log a warning per dataset and read-only checkpoint manager; a notebook
    shows the figures instead."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


@dataclasses.dataclass
class TokenView:
    """N rollout rows x T response tokens x S support slots, as numpy arrays.

    slot_ids [N, T, S] token ids (TAIL for the lumped tail), valid [N, T, S]; old / new /
    projected [N, T, S] probabilities on the support (0 at invalid slots); tail_size [N, T]
    tokens lumped in the tail slot; active [N, T] (KL(new || old) > eps: projected); eta,
    kl_before (KL(new || old)), kl_after [N, T];
    dppo_divergence / dppo_keep: variant -> [N, T] (keep 1 = trained, 0 = masked);
    sampled [N, T] ids, sampled_slot [N, T]; pi_sampled / mu_sampled [N, T] the sampled token's
    full-vocabulary probability under the new / old (behaviour) policy; response_mask [N, T];
    advantages [N].
    """

    run_dir: str
    steps: tuple[int, int]  # (old, new) checkpoint steps
    eps: float
    deltas: dict[str, tuple[float, float]]  # variant -> (delta_low, delta_high)
    prompts: list[str]
    completions: list[str]
    token_text: list[str]  # id -> text
    slot_ids: np.ndarray
    valid: np.ndarray
    old: np.ndarray
    new: np.ndarray
    projected: np.ndarray
    tail_size: np.ndarray
    active: np.ndarray
    eta: np.ndarray
    kl_before: np.ndarray
    kl_after: np.ndarray
    dppo_divergence: dict[str, np.ndarray]
    dppo_keep: dict[str, np.ndarray]
    sampled: np.ndarray
    sampled_slot: np.ndarray
    pi_sampled: np.ndarray
    mu_sampled: np.ndarray
    response_mask: np.ndarray
    advantages: np.ndarray


def checkpoint_steps(run_dir: str) -> list[int]:
    """The steps of a run's complete checkpoints, oldest first."""
    with _quiet_absl():
        return sorted(_manager(run_dir).all_steps())


def _manager(run_dir: str) -> ocp.CheckpointManager:
    directory = os.path.abspath(os.path.join(run_dir, CHECKPOINT_DIR))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT_DIR}/ directory: the run has not "
                                "saved a checkpoint yet")
    return ocp.CheckpointManager(directory, item_names=("state", "meta"),
                                 options=ocp.CheckpointManagerOptions(read_only=True))


def load_params(run_dir: str, step: int, parts: Components) -> nnx.State:
    """The policy parameters of checkpoint `step`, placed like `parts.params` (the optimizer
    state is not read: a partial restore of the saved TrainState's params)."""
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          parts.params)
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    with _quiet_absl():
        restored = _manager(run_dir).restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": target},
                                         restore_args={"params": restore_args},
                                         partial_restore=True)))
    return restored.state["params"]


def saved_config(run_dir: str) -> ml_collections.ConfigDict:
    """A run's config.json with the keys that configs/default.py has gained since the run
    added at their defaults (the run's own values are kept as they are); locked."""
    config = load_saved_config(run_dir)
    config.unlock()
    defaults = load_config(config_file("default.py"))
    for key in flat_keys(defaults):
        *parents, leaf = key.split(".")
        node, default = config, defaults
        for part in parents:
            default = default[part]
            if part not in node:
                node[part] = ml_collections.ConfigDict()
            node = node[part]
        if leaf not in node:
            node[leaf] = default[leaf]
    config.lock()
    return config


def run_components(run_dir: str) -> tuple[ml_collections.ConfigDict, Components]:
    """The saved config of a run (`saved_config`) and its components, on one device
    (inspection needs no mesh)."""
    config = saved_config(run_dir)
    config.mesh.shape = [1, 1, 1]
    with _quiet_absl():
        return config, build(config, run_dir)


def _deltas(loss: ml_collections.ConfigDict) -> dict[str, tuple[float, float]]:
    """Each DPPO variant's (delta_low, delta_high): the config's, else the paper value."""
    out = {}
    for variant in DPPO_VARIANTS:
        default = DPPO_DEFAULT_DELTA[variant.split("_")[1]]
        out[variant] = (default if loss.delta_low is None else loss.delta_low,
                        default if loss.delta_high is None else loss.delta_high)
    return out


class _Settings(NamedTuple):
    """The static part of `_trust_regions` (hashable)."""

    spec: LogProbSpec
    vocab_size: int
    k: int
    delta: float
    new_logp_on_union: bool


class _Support(NamedTuple):
    new_ids: jax.Array  # [N, T, K] the new policy's top-K ids (the first slot block)
    a: jax.Array
    b: jax.Array
    valid: jax.Array
    sampled_slot: jax.Array


@functools.partial(jax.jit, static_argnums=(0, 1))
def _trust_regions(graphdef: nnx.GraphDef, settings: _Settings, new_params: nnx.State,
                   batch: TrainBatch, eps: jax.Array, deltas: dict[str, jax.Array]):
    """The new policy on the batch's tokens -> TROLL's support, projection and info, and each
    DPPO variant's divergence and keep-mask (one compiled program instead of many eager ops)."""
    new = policy_logprobs(graphdef, new_params, batch, settings.spec)
    sampled = batch.response_tokens
    support = sparse_support(
        new.record.topk_ids, new.record.topk_logp, batch.old.topk_ids, batch.old.topk_logp,
        sampled, new.record.logp, batch.old.logp, settings.vocab_size, k=settings.k,
        delta=settings.delta, new_logp_at_old_topk=new.logp_at_old_topk,
        new_logp_on_union=settings.new_logp_on_union)
    logp, info = kl_projection(support.a, support.b, support.valid, eps)
    logq_k, logmu_k = dppo.topk_slots(batch.old.topk_ids, batch.old.topk_logp,
                                      new.logp_at_old_topk, sampled, new.record.logp,
                                      batch.old.logp)
    divergence = {
        "binary_tv": dppo.binary_tv(new.record.logp, batch.old.logp),
        "binary_kl": dppo.binary_kl(new.record.logp, batch.old.logp),
        "topk_tv": dppo.topk_tv(logq_k, logmu_k),
        "topk_kl": dppo.topk_kl(logq_k, logmu_k),
    }
    keep = {v: dppo.mask(d, new.record.logp, batch.old.logp, batch.advantages,
                         batch.response_mask, deltas[v][0], deltas[v][1])
            for v, d in divergence.items()}
    return (_Support(new.record.topk_ids, *support), logp, info, divergence, keep,
            new.record.logp)


def token_view(run_dir: str, *, num_prompts: int | None = None, seed: int = 0) -> TokenView:
    """Samples G = rollout.num_samples completions of `num_prompts` training prompts (default:
    data.prompts_per_step, the run's rollout batch) with the older of the run's two latest
    checkpoints and views every response token under both."""
    steps = checkpoint_steps(run_dir)
    if len(steps) < 2:
        raise ValueError(
            f"{run_dir} has {len(steps)} checkpoint(s) {steps}; comparing a behaviour and a "
            "current policy needs two: rerun with --config.train.checkpoint_every=N (a divisor "
            "of train.steps below it) and --config.train.keep_checkpoints>=2")
    old_step, new_step = steps[-2], steps[-1]
    config, parts = run_components(run_dir)
    old_params = load_params(run_dir, old_step, parts)
    new_params = load_params(run_dir, new_step, parts)
    loss = config.loss
    k = config.rollout.record_top_k or loss.troll_k
    g = config.rollout.num_samples
    num_prompts = num_prompts or config.data.prompts_per_step
    prompts = next(PromptIterator(parts.train_source, parts.formatter, num_prompts, seed=seed))
    sampling = dataclasses.replace(parts.sampling, record_top_k=k)
    rollout = phases.sample(parts, old_params, prompts, jax.random.key(seed), num_samples=g,
                            max_new_tokens=config.rollout.max_new_tokens, sampling=sampling)
    scored = phases.score(parts, prompts, rollout, g)
    adv = phases.advantages(jnp.asarray(scored.rewards), estimator=config.advantage.estimator,
                            group_size=g, eps=config.advantage.std_eps)
    batch = train_batch(rollout, adv)
    spec = LogProbSpec(temperature=config.rollout.temperature, top_k=k, gather_old_topk=True,
                       chunk_size=config.train.logprob_chunk_size)
    deltas = _deltas(loss)
    settings = _Settings(spec, parts.model_config.vocab_size, loss.troll_k, loss.troll_delta,
                         bool(loss.troll_new_logp_on_union))
    with jax.set_mesh(parts.mesh):
        support, logp, info, divergence, keep, new_logp = jax.device_get(_trust_regions(
            parts.graphdef, settings, new_params, batch, jnp.float32(loss.troll_eps),
            {v: jnp.asarray(d, jnp.float32) for v, d in deltas.items()}))
    vocab = settings.vocab_size
    sampled = np.asarray(batch.response_tokens)
    n_ids = np.asarray(support.new_ids)
    o_ids = np.asarray(batch.old.topk_ids)
    valid = np.asarray(support.valid)
    tail_slot = np.zeros(valid.shape[-1], bool)
    tail_slot[-1] = True
    slot_ids = np.concatenate([n_ids, o_ids, sampled[..., None],
                               np.full(n_ids.shape[:-1] + (1,), TAIL)], axis=-1)

    def probs(x: jax.Array) -> np.ndarray:
        return np.where(valid, np.exp(np.asarray(x, np.float64)), 0.0)

    # The tail holds V - |U| tokens, |U| = the valid non-tail slots.
    tail_size = np.where(valid[..., -1], vocab - (valid & ~tail_slot).sum(-1), 0)
    return TokenView(
        run_dir=run_dir, steps=(old_step, new_step), eps=float(loss.troll_eps), deltas=deltas,
        prompts=scored.prompts, completions=scored.completions,
        token_text=[parts.tokenizer.decode([i]) for i in range(vocab)],
        slot_ids=slot_ids, valid=valid, old=probs(support.b), new=probs(support.a),
        projected=probs(logp), tail_size=tail_size, active=np.asarray(info.active),
        eta=np.asarray(info.eta), kl_before=np.asarray(info.kl_before),
        kl_after=np.asarray(info.kl_after),
        dppo_divergence={v: np.asarray(d) for v, d in divergence.items()},
        dppo_keep={v: np.asarray(m) for v, m in keep.items()},
        sampled=sampled, sampled_slot=np.asarray(support.sampled_slot),
        pi_sampled=np.exp(np.asarray(new_logp, np.float64)),
        mu_sampled=np.exp(np.asarray(batch.old.logp, np.float64)),
        response_mask=np.asarray(batch.response_mask), advantages=np.asarray(batch.advantages),
    )


def most_moved(view: TokenView) -> tuple[int, int]:
    """(row, position) of the response token with the largest KL(new || old) on its support."""
    kl = np.where(view.response_mask, view.kl_before, -np.inf)
    row, pos = np.unravel_index(np.argmax(kl), kl.shape)
    return int(row), int(pos)


def slot_table(view: TokenView, row: int, pos: int) -> list[dict[str, Any]]:
    """The valid slots of one token, most likely under the old policy first (the tail last):
    token text (or "tail (m tokens)"), sampled flag, old / new / projected probabilities."""
    slots = np.flatnonzero(view.valid[row, pos])
    out = []
    for s in slots:
        token = int(view.slot_ids[row, pos, s])
        text = (f"tail ({int(view.tail_size[row, pos])} tokens)" if token == TAIL
                else view.token_text[token])
        out.append({"token": text, "id": token, "sampled": bool(s == view.sampled_slot[row, pos]),
                    "old": float(view.old[row, pos, s]), "new": float(view.new[row, pos, s]),
                    "projected": float(view.projected[row, pos, s])})
    return sorted(out, key=lambda r: (r["id"] == TAIL, -r["old"]))


def context(view: TokenView, row: int, pos: int) -> str:
    """The prompt and the completion before the token at `pos` of `row`."""
    prefix = "".join(view.token_text[int(t)] for t in view.sampled[row, :pos])
    return view.prompts[row] + prefix


def agreement(view: TokenView) -> list[dict[str, Any]]:
    """Per DPPO variant, over the response tokens: the fraction TROLL projects, the fraction
    the variant masks, and the four overlaps (both, TROLL only, DPPO only, neither)."""
    mask = view.response_mask.astype(bool)
    n = max(int(mask.sum()), 1)
    projected = view.active & mask
    rows = []
    for variant in DPPO_VARIANTS:
        keep = view.dppo_keep[variant]
        masked = (keep == 0) & mask
        low, high = view.deltas[variant]
        rows.append({
            "dppo variant": variant, "delta (low, high)": f"{low:g}, {high:g}",
            **{name: float(part.sum() / n) for name, part in (
                ("TROLL projected", projected), ("DPPO masked", masked),
                ("both", projected & masked), ("TROLL only", projected & ~masked),
                ("DPPO only", ~projected & masked), ("neither", ~projected & ~masked & mask))},
        })
    return rows
