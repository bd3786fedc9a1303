"""Config -> the run's components: mesh, tokenizer, model, task splits, prompts, rewards, K.

Everything a config can get wrong is checked here, before anything compiles, with a message
that names the keys involved.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from trlx_jax.config import ConfigError
from trlx_jax.data import (
    TASKS,
    CombinedReward,
    PromptFormatter,
    TaskSource,
    TaskSpec,
    build_char_tokenizer,
    combine_rewards,
    load_task,
    load_tokenizer,
)
from trlx_jax.data.prompts import pad_id_of
from trlx_jax.models import ModelConfig, init_model, load_hf, make_mesh, shard_model
from trlx_jax.objectives import advantage_estimator, policy_loss
from trlx_jax.rollout import SamplingParams
from trlx_jax.trainer.batch import LogProbSpec
from trlx_jax.trainer.step import UpdateSchedule

TROLL_LOSSES = ("troll", "troll_gspo")
DPPO_TOPK_LOSSES = ("dppo_topk_tv", "dppo_topk_kl")


def resolve_mesh_shape(shape: Sequence[int], device_count: int) -> tuple[int, ...]:
    """(data, fsdp, tensor) with at most one -1, which takes the devices the others leave."""
    shape = tuple(int(s) for s in shape)
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
    return weights


def logprob_spec(config: ml_collections.ConfigDict) -> LogProbSpec:
    """What the current policy's log-prob pass computes, checked against the rollout record.

    One K for the run: TROLL needs the sampler's record, its own top-K and `loss.troll_k` to be
    the same K; DPPO top-K needs a record to gather at.
    """
    name, loss, k = config.loss_name, config.loss, config.rollout.record_top_k
    if name in TROLL_LOSSES:
        if not k == loss.troll_k:
            raise ConfigError(
                f"TROLL needs one K: rollout.record_top_k={k}, the current-policy top-K "
                f"(loss.troll_k) = {loss.troll_k} and loss.troll_k={loss.troll_k} must be equal; "
                f"set --config.rollout.record_top_k={loss.troll_k} or "
                f"--config.loss.troll_k={k}"
            )
        top_k, gather = loss.troll_k, bool(loss.troll_new_logp_on_union)
    elif name in DPPO_TOPK_LOSSES:
        if k < 1:
            raise ConfigError(f"{name} compares the policies on the rollout's top-K: set "
                              "rollout.record_top_k >= 1 (e.g. 64)")
        top_k, gather = 0, True
    else:
        top_k, gather = 0, False
    if loss.troll_old_source == "recompute" and name not in TROLL_LOSSES:
        raise ConfigError(f"loss.troll_old_source='recompute' applies to {TROLL_LOSSES} only, "
                          f"not loss_name={name!r}")
    return LogProbSpec(temperature=config.rollout.temperature, top_k=top_k,
                       gather_old_topk=gather, chunk_size=config.train.logprob_chunk_size)


def update_schedule(config: ml_collections.ConfigDict) -> UpdateSchedule:
    """Epochs x minibatches x micro-batches of one rollout batch, checked to divide it."""
    t = config.train
    rows = config.data.prompts_per_step * config.rollout.num_samples
    for key, value in (("epochs_per_batch", t.epochs_per_batch), ("minibatches", t.minibatches),
                       ("microbatches", t.microbatches)):
        if value < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {value}")
    if rows % (t.minibatches * t.microbatches):
        raise ConfigError(
            f"a rollout batch of {rows} rows (data.prompts_per_step x rollout.num_samples) does "
            f"not split into train.minibatches={t.minibatches} x train.microbatches="
            f"{t.microbatches}"
        )
    return UpdateSchedule(t.epochs_per_batch, t.minibatches, t.microbatches)


def _check_domains(config: ml_collections.ConfigDict) -> None:
    """Numeric settings a run would otherwise only trip over deep inside a compiled step."""
    loss, name = config.loss, config.loss_name
    checks = [
        ("optimizer.lr", config.optimizer.lr, config.optimizer.lr > 0, "> 0"),
        ("sft.lr", config.sft.lr, config.sft.lr > 0, "> 0"),
        ("rollout.num_samples", config.rollout.num_samples, config.rollout.num_samples >= 1,
         ">= 1"),
        ("data.prompts_per_step", config.data.prompts_per_step,
         config.data.prompts_per_step >= 1, ">= 1"),
    ]
    if name in TROLL_LOSSES:
        checks.append(("loss.troll_eps", loss.troll_eps,
                       math.isfinite(loss.troll_eps) and loss.troll_eps > 0, "> 0 and finite"))
    if name.startswith("dppo_"):
        for key in ("delta_low", "delta_high"):
            value = loss[key]
            checks.append((f"loss.{key}", value, value is None or value > 0,
                           "> 0 (or None for the paper value)"))
    for key, value, ok, domain in checks:
        if not ok:
            raise ConfigError(f"{key}={value} is out of range: it must be {domain}")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Registry names and the cross-key rules a run needs; raises ConfigError naming the keys."""
    for key, registry_check in (("loss_name", policy_loss),
                                ("advantage.estimator", advantage_estimator)):
        value = config.loss_name if key == "loss_name" else config.advantage.estimator
        try:
            registry_check(value)
        except KeyError as e:
            raise ConfigError(f"{key}: {e}") from None
    try:
        TASKS.get(config.data.task)
    except KeyError as e:
        raise ConfigError(f"data.task: {e}") from None
    logprob_spec(config)
    update_schedule(config)
    _check_domains(config)
    if config.train.steps < 1:
        raise ConfigError(f"train.steps must be >= 1, got {config.train.steps}")
    if config.train.eval_every < 1:
        raise ConfigError(f"train.eval_every must be >= 1, got {config.train.eval_every}")


@dataclasses.dataclass
class Components:
    """What a run is made of, built once from its config."""

    mesh: Mesh
    tokenizer: Any
    model_config: ModelConfig
    graphdef: nnx.GraphDef
    params: nnx.State
    task: TaskSpec
    train_source: TaskSource
    test_source: TaskSource
    formatter: PromptFormatter
    reward: CombinedReward
    accuracy_reward: str
    sampling: SamplingParams
    stop_ids: tuple[int, ...]
    pad_id: int


def build_tokenizer(config: ml_collections.ConfigDict, run_dir: str) -> Any:
    """The configured tokenizer, the model directory's, or a character tokenizer in run_dir."""
    if config.data.tokenizer:
        return load_tokenizer(config.data.tokenizer)
    if config.model.path:
        return load_tokenizer(config.model.path)
    return build_char_tokenizer(os.path.join(run_dir, "tokenizer"))


def _check_model_dir(path: str) -> None:
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


def build_model(
    config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh
) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
    """The policy: loaded from model.path, or a random tiny model of model.family, on `mesh`."""
    m = config.model
    # How the forward computes (not what it computes): attention kernel and remat policy.
    compute = dict(remat=m.remat, attention=m.attention, attention_block_q=m.attention_block_q,
                   attention_block_kv=m.attention_block_kv)
    if m.path:
        model, model_config = load_hf(m.path, mesh=mesh, dtype=m.dtype, param_dtype=m.param_dtype,
                                      **compute)
    else:
        model_config = ModelConfig(
            model_type=m.family, vocab_size=vocab_size, hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size, num_layers=m.num_layers,
            num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
            tie_word_embeddings=m.tie_word_embeddings, qk_norm=m.family == "qwen3",
            qkv_bias=m.family == "qwen2", dtype=m.dtype, param_dtype=m.param_dtype,
            **compute,
        )
        model = init_model(model_config, seed=config.seed)
        shard_model(model, mesh)
    graphdef, params = nnx.split(model)
    return model_config, graphdef, params


def build(config: ml_collections.ConfigDict, run_dir: str) -> Components:
    """Checks `config` and builds every component of the run."""
    check_config(config)
    mesh = make_mesh(resolve_mesh_shape(config.mesh.shape, jax.device_count()))
    if config.model.path:
        _check_model_dir(config.model.path)
    tokenizer = build_tokenizer(config, run_dir)
    model_config, graphdef, params = build_model(config, len(tokenizer), mesh)
    k = config.rollout.record_top_k
    if k >= model_config.vocab_size:
        raise ConfigError(f"rollout.record_top_k={k} must be below the vocabulary size "
                          f"({model_config.vocab_size} tokens)")
    if len(tokenizer) > model_config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
            f"{model_config.vocab_size}: ids past it would read garbage; use the model's own "
            "tokenizer (data.tokenizer) or a model with a large enough embedding"
        )
    d = config.data
    task = TASKS.get(d.task)
    options = parse_options(d.task_options, "data.task_options")
    data_dir = d.data_dir or None
    train_source = load_task(d.task, "train", data_dir=data_dir, **options)
    test_source = load_task(d.task, "test", data_dir=data_dir, **options)
    formatter = PromptFormatter(
        tokenizer,
        task.prompt_config(use_chat_template=d.use_chat_template, max_length=d.max_prompt_len,
                           on_too_long=d.on_long_prompt),
    )
    try:
        reward = combine_rewards(parse_rewards(d.rewards, task))
    except KeyError as e:
        raise ConfigError(f"data.rewards: {e}") from None
    r = config.rollout
    sampling = SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                              record_top_k=k)
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token, so generation could never stop")
    return Components(
        mesh=mesh, tokenizer=tokenizer, model_config=model_config, graphdef=graphdef,
        params=params, task=task, train_source=train_source, test_source=test_source,
        formatter=formatter, reward=reward, accuracy_reward=next(iter(task.rewards)),
        sampling=sampling, stop_ids=(int(tokenizer.eos_token_id),), pad_id=pad_id_of(tokenizer),
    )
