"""A run config checked in one place, before anything is built or compiled.

`validate_config` checks that every key a run reads exists, every registry name (loss, advantage
estimator, task, reward terms, aggregation mode, ...) is registered, every value lies in its
domain (`DOMAINS`: one table, which takes the losses' and the sampler's own tables), and the
rules that join several keys hold: one K for TROLL, batches that split into minibatches and
micro-batches and over the data-parallel devices, a mesh shape that resolves against the device
count, a model directory that holds a model. Each error is a ConfigError naming the key, the
value and what is allowed. `check_vocabulary` adds the rules that need the vocabulary size.
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from trlx_jax.checks import ArgumentError, Choice, Domain, check_value, describe_violation
from trlx_jax.config import ConfigError
from trlx_jax.data import REWARDS, TASKS, TaskSpec
from trlx_jax.models.config import ATTENTION_KERNELS, REMAT_POLICIES, SUPPORTED_MODEL_TYPES
from trlx_jax.objectives import advantage_estimator, policy_loss
from trlx_jax.objectives.config import DOMAINS as LOSS_DOMAINS
from trlx_jax.rollout.sampling import DOMAINS as SAMPLING_DOMAINS
from trlx_jax.trainer.state import SCHEDULES

TROLL_LOSSES = ("troll", "troll_gspo")
DPPO_TOPK_LOSSES = ("dppo_topk_tv", "dppo_topk_kl")

_POSITIVE = Domain(1, integer=True)
_COUNT = Domain(0, integer=True)
_RATE = Domain(0, low_open=True, finite=True)
_BETA = Domain(0, 1, high_open=True)
_DTYPES = Choice(("float32", "bfloat16"))

DOMAINS: dict[str, Domain | Choice] = {
    "seed": Domain(integer=True),
    "model.family": Choice(SUPPORTED_MODEL_TYPES),
    "model.hidden_size": _POSITIVE,
    "model.num_layers": _POSITIVE,
    "model.num_heads": _POSITIVE,
    "model.num_kv_heads": _POSITIVE,
    "model.head_dim": _POSITIVE,
    "model.intermediate_size": _POSITIVE,
    "model.dtype": _DTYPES,
    "model.param_dtype": _DTYPES,
    "model.remat": Choice(REMAT_POLICIES),
    "model.attention": Choice(ATTENTION_KERNELS),
    "model.attention_block_q": _POSITIVE,
    "model.attention_block_kv": _POSITIVE,
    "data.max_prompt_len": _POSITIVE,
    "data.on_long_prompt": Choice(("error", "drop")),
    "data.prompts_per_step": _POSITIVE,
    "rollout.num_samples": _POSITIVE,
    "rollout.max_new_tokens": _POSITIVE,
    "rollout.weights": Choice(("gathered", "training")),
    **{f"rollout.{k}": d for k, d in SAMPLING_DOMAINS.items()},
    "advantage.std_eps": Domain(0, finite=True),
    **{f"loss.{k}": d for k, d in LOSS_DOMAINS.items()},
    "optimizer.lr": _RATE,
    "optimizer.b1": _BETA,
    "optimizer.b2": _BETA,
    "optimizer.weight_decay": Domain(0, finite=True),
    "optimizer.grad_clip": Domain(finite=True, note="(<= 0: off)"),
    "optimizer.warmup_steps": _COUNT,
    "optimizer.schedule": Choice(SCHEDULES),
    "train.algorithm": Choice(("rl", "sft")),
    "train.steps": _POSITIVE,
    "train.epochs_per_batch": _POSITIVE,
    "train.minibatches": _POSITIVE,
    "train.microbatches": _POSITIVE,
    "train.logprob_chunk_size": _POSITIVE,
    "train.eval_every": _POSITIVE,
    "train.eval_examples": _POSITIVE,
    "train.eval_pass_k": Domain(0, integer=True, note="(0 = off)"),
    "train.eval_samples_logged": _COUNT,
    "train.checkpoint_every": _POSITIVE,
    "train.keep_checkpoints": _POSITIVE,
    "train.max_bad_steps": _POSITIVE,
    "sft.steps": Domain(0, integer=True, note="(0 = no warm-up)"),
    "sft.num_examples": _POSITIVE,
    "sft.batch_size": _POSITIVE,
    "sft.lr": _RATE,
    "sft.warmup_steps": _COUNT,
    "sft.max_completion_len": _POSITIVE,
    "logging.wandb_mode": Choice(("online", "offline", "disabled")),
}
# Keys read without a numeric domain (strings, flags, paths), required all the same.
_OTHER_KEYS = (
    "run_dir", "loss_name", "model.path", "model.tie_word_embeddings",
    "data.task", "data.task_options", "data.data_dir", "data.tokenizer",
    "data.use_chat_template", "data.rewards", "advantage.estimator", "mesh.shape",
    "loss.troll_new_logp_on_union", "train.allow_config_change", "sft.cache_dir",
    "logging.tensorboard", "logging.progress", "logging.wandb", "logging.wandb_project",
)


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_keys(config: ml_collections.ConfigDict) -> None:
    missing = [k for k in (*DOMAINS, *_OTHER_KEYS) if not _lookup(config, k)[0]]
    if missing:
        raise ConfigError(
            f"the config has no key {', '.join(repr(k) for k in missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}: a run reads every key of configs/default.py; "
            "build a config from its get_config() and change values there"
        )


def resolve_mesh_shape(shape: Sequence[int], device_count: int) -> tuple[int, ...]:
    """(data, fsdp, tensor) with at most one -1, which takes the devices the others leave."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"mesh.shape={shape!r} must be 3 integer sizes (data, fsdp, tensor), "
                          "e.g. (-1, 1, 1)") from None
    if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh.shape={shape} must be 3 sizes (data, fsdp, tensor), each >= 1 "
                          "or one of them -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if device_count % known:
            raise ConfigError(
                f"mesh.shape={shape}: {device_count} devices do not divide by {known}"
            )
        shape = tuple(device_count // known if s == -1 else s for s in shape)
    if math.prod(shape) > device_count:
        raise ConfigError(f"mesh.shape={shape} needs {math.prod(shape)} devices, "
                          f"{device_count} available")
    return shape


def parse_options(text: str, key: str) -> dict[str, Any]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} (values as Python literals where they parse)."""
    options: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"{key}={text!r}: expected comma-separated name=value items")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name] = value
    return options


def parse_rewards(text: str, spec: TaskSpec) -> dict[str, float]:
    """'name:weight,...' -> weights; '' -> the task's default rewards."""
    if not text.strip():
        return dict(spec.rewards)
    weights = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"data.rewards={text!r}: weight {weight!r} of {name!r} is not a "
                              "number (write name:weight,...)") from None
        if not math.isfinite(weights[name.strip()]):
            raise ConfigError(f"data.rewards={text!r}: the weight of {name!r} must be finite")
    return weights


def _check_registries(config: ml_collections.ConfigDict) -> None:
    """Names that refer to registries, each checked against its registry."""
    lookups = (("loss_name", policy_loss), ("advantage.estimator", advantage_estimator),
               ("data.task", TASKS.get))
    for key, lookup in lookups:
        value = _lookup(config, key)[1]
        try:
            lookup(value)
        except KeyError as e:
            raise ConfigError(f"{key}={value!r}: {e}") from None
    weights = parse_rewards(config.data.rewards, TASKS.get(config.data.task))
    for name in weights:
        try:
            REWARDS.get(name)
        except KeyError as e:
            raise ConfigError(f"data.rewards={config.data.rewards!r}: {e}") from None
    parse_options(config.data.task_options, "data.task_options")


def _check_domains(config: ml_collections.ConfigDict) -> None:
    for key, domain in DOMAINS.items():
        value = _lookup(config, key)[1]
        try:
            check_value(key, value, domain)
        except ArgumentError:
            raise ConfigError(describe_violation(key, value, domain)) from None


def check_logprob_rules(config: ml_collections.ConfigDict) -> None:
    """One K for TROLL (record, current-policy top-K, loss.troll_k); a record for DPPO top-K;
    `troll_old_source='recompute'` for TROLL only."""
    name, loss, k = config.loss_name, config.loss, config.rollout.record_top_k
    if name in TROLL_LOSSES and k != loss.troll_k:
        raise ConfigError(
            f"TROLL needs one K: rollout.record_top_k={k}, the current-policy top-K "
            f"(loss.troll_k) = {loss.troll_k} and loss.troll_k={loss.troll_k} must be equal; "
            f"set --config.rollout.record_top_k={loss.troll_k} or --config.loss.troll_k={k}"
        )
    if name in DPPO_TOPK_LOSSES and k < 1:
        raise ConfigError(f"{name} compares the policies on the rollout's top-K: set "
                          "rollout.record_top_k >= 1 (e.g. 64)")
    if loss.troll_old_source == "recompute" and name not in TROLL_LOSSES:
        raise ConfigError(f"loss.troll_old_source='recompute' applies to {TROLL_LOSSES} only, "
                          f"not loss_name={name!r}")


def check_update_schedule(config: ml_collections.ConfigDict) -> None:
    """Epochs, minibatches and micro-batches >= 1, and a rollout batch that splits into them."""
    t = config.train
    for key in ("epochs_per_batch", "minibatches", "microbatches"):
        if not _POSITIVE.contains(t[key]):
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    rows = config.data.prompts_per_step * config.rollout.num_samples
    if rows % (t.minibatches * t.microbatches):
        raise ConfigError(
            f"a rollout batch of {rows} rows (data.prompts_per_step x rollout.num_samples) does "
            f"not split into train.minibatches={t.minibatches} x train.microbatches="
            f"{t.microbatches}"
        )


def _check_data_parallel(config: ml_collections.ConfigDict, mesh: tuple[int, ...]) -> None:
    """Batches are placed with their rows over data x fsdp: their sizes must divide by it."""
    shards = mesh[0] * mesh[1]
    rows = config.data.prompts_per_step * config.rollout.num_samples
    if rows % shards:
        raise ConfigError(
            f"a rollout batch of {rows} rows (data.prompts_per_step={config.data.prompts_per_step}"
            f" x rollout.num_samples={config.rollout.num_samples}) does not split over the "
            f"{shards} data-parallel devices of mesh.shape={mesh}; make it a multiple of {shards}"
        )
    if config.sft.steps and config.sft.batch_size % shards:
        raise ConfigError(f"sft.batch_size={config.sft.batch_size} does not split over the "
                          f"{shards} data-parallel devices of mesh.shape={mesh}; make it a "
                          f"multiple of {shards}")


def _check_model(config: ml_collections.ConfigDict) -> None:
    """A model directory that holds an HF model, or tiny-model sizes that fit together."""
    m = config.model
    if m.path:
        check_model_dir(m.path)
    elif m.num_heads % m.num_kv_heads:
        raise ConfigError(f"model.num_heads={m.num_heads} must be a multiple of "
                          f"model.num_kv_heads={m.num_kv_heads}")


def check_model_dir(path: str) -> None:
    """A model directory must hold an HF config.json and safetensors weights."""
    if not os.path.isdir(path):
        raise ConfigError(f"model.path={path!r} is not a directory; give an HF model directory "
                          "(config.json + *.safetensors), or '' for a random tiny model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"model.path={path!r} has no config.json: it is not an HF model "
                          "directory (save one with save_pretrained or trlx_jax.models.save_hf)")
    if not any(name.endswith(".safetensors") for name in os.listdir(path)):
        raise ConfigError(f"model.path={path!r} has a config.json but no *.safetensors weights; "
                          "convert the checkpoint to safetensors (save_pretrained does)")


def validate_config(
    config: ml_collections.ConfigDict, device_count: int | None = None
) -> tuple[int, ...]:
    """Every check above, in order (keys, registries, domains, cross-key rules, mesh, model);
    raises ConfigError naming the key. Returns the resolved mesh shape."""
    _check_keys(config)
    _check_registries(config)
    _check_domains(config)
    check_logprob_rules(config)
    check_update_schedule(config)
    devices = jax.device_count() if device_count is None else device_count
    mesh = resolve_mesh_shape(config.mesh.shape, devices)
    _check_data_parallel(config, mesh)
    _check_model(config)
    return mesh


def check_vocabulary(config: ml_collections.ConfigDict, model_vocab: int,
                     tokenizer_vocab: int) -> None:
    """K below the model's vocabulary, and a tokenizer whose ids the model can embed."""
    k = config.rollout.record_top_k
    if k >= model_vocab:
        raise ConfigError(f"rollout.record_top_k={k} must be below the vocabulary size "
                          f"({model_vocab} tokens)")
    if tokenizer_vocab > model_vocab:
        raise ConfigError(
            f"the tokenizer has {tokenizer_vocab} tokens but the model's vocabulary has "
            f"{model_vocab}: ids past it would read garbage; use the model's own tokenizer "
            "(data.tokenizer) or a model with a large enough embedding"
        )
