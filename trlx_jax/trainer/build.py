"""Config -> the run's components: mesh, tokenizer, model, task splits, prompts, rewards, K.

Everything a config can get wrong is checked first (`trainer/validate.py`), before anything is
built or compiled, with a message that names the keys involved.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
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
from trlx_jax.rollout import SamplingParams
from trlx_jax.trainer import hosts
from trlx_jax.trainer.batch import LogProbSpec
from trlx_jax.trainer.step import UpdateSchedule
from trlx_jax.trainer.validate import (
    DPPO_TOPK_LOSSES,
    TROLL_LOSSES,
    check_logprob_rules,
    check_update_schedule,
    check_vocabulary,
    parse_options,
    parse_rewards,
    resolve_mesh_shape,
    validate_config,
)


def logprob_spec(config: ml_collections.ConfigDict) -> LogProbSpec:
    """What the current policy's log-prob pass computes, checked against the rollout record.

    One K for the run: TROLL needs the sampler's record, its own top-K and `loss.troll_k` to be
    the same K; DPPO top-K needs a record to gather at (`validate.check_logprob_rules`).
    """
    check_logprob_rules(config)
    name, loss = config.loss_name, config.loss
    if name in TROLL_LOSSES:
        top_k, gather = loss.troll_k, bool(loss.troll_new_logp_on_union)
    else:
        top_k, gather = 0, name in DPPO_TOPK_LOSSES
    return LogProbSpec(temperature=config.rollout.temperature, top_k=top_k,
                       gather_old_topk=gather, chunk_size=config.train.logprob_chunk_size)


def update_schedule(config: ml_collections.ConfigDict) -> UpdateSchedule:
    """Epochs x minibatches x micro-batches of one rollout batch, checked to divide it."""
    check_update_schedule(config)
    t = config.train
    return UpdateSchedule(t.epochs_per_batch, t.minibatches, t.microbatches)


def check_config(config: ml_collections.ConfigDict) -> None:
    """The whole config checked before anything is built (`validate.validate_config`): keys,
    registry names, value domains and cross-key rules; raises ConfigError naming the keys."""
    validate_config(config)


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
    # Extra evaluation metrics: fn(samples, prompts, outputs, **metadata) -> {name: [N] floats}.
    metric_fn: Callable[..., Mapping[str, Any]] | None = None


def build_tokenizer(config: ml_collections.ConfigDict, run_dir: str) -> Any:
    """The configured tokenizer, the model directory's, or a character tokenizer in run_dir."""
    if config.data.tokenizer:
        return load_tokenizer(config.data.tokenizer)
    if config.model.path:
        return load_tokenizer(config.model.path)
    return build_char_tokenizer(os.path.join(run_dir, "tokenizer"))


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
    with hosts.main_process_first("tokenizer"):
        tokenizer = build_tokenizer(config, run_dir)
    model_config, graphdef, params = build_model(config, len(tokenizer), mesh)
    check_vocabulary(config, model_config.vocab_size, len(tokenizer))
    d = config.data
    task = TASKS.get(d.task)
    options = parse_options(d.task_options, "data.task_options")
    data_dir = d.data_dir or None
    with hosts.main_process_first("task preparation"):  # one process writes the files
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
                              record_top_k=r.record_top_k)
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token, so generation could never stop")
    return Components(
        mesh=mesh, tokenizer=tokenizer, model_config=model_config, graphdef=graphdef,
        params=params, task=task, train_source=train_source, test_source=test_source,
        formatter=formatter, reward=reward, accuracy_reward=next(iter(task.rewards)),
        sampling=sampling, stop_ids=(int(tokenizer.eos_token_id),), pad_id=pad_id_of(tokenizer),
    )
