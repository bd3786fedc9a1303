"""Supervised warm-up: a short SFT phase on a labelled subset, cached by a hash of its inputs.

RL on LLMs starts from a pretrained model; the embedded default starts from a partially
competent tiny model the same way. The result is an HF directory under `sft.cache_dir/<hash>`,
where the hash covers every config section the warm-up reads (model, data, sft, seed), so
repeated runs, and every method of a comparison, start from the same weights and skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from trlx_jax.data import SupervisedIterator
from trlx_jax.models import load_hf, save_hf
from trlx_jax.trainer import hosts
from trlx_jax.trainer.build import Components
from trlx_jax.trainer.state import create_state, make_optimizer
from trlx_jax.trainer.step import SFTBatch, make_sft_train_step, shard_batch

logger = logging.getLogger(__name__)
MARKER = "warmup.json"
# Keys of the data section that change what the warm-up sees.
_DATA_KEYS = ("task", "task_options", "data_dir", "tokenizer", "use_chat_template",
              "max_prompt_len", "on_long_prompt")


def warmup_key(config: ml_collections.ConfigDict) -> str:
    """A hash of the config values the warm-up depends on (16 hex digits)."""
    inputs = {
        "model": config.model.to_dict(),
        "data": {k: config.data[k] for k in _DATA_KEYS},
        "sft": {k: v for k, v in config.sft.to_dict().items() if k != "cache_dir"},
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def sft_optimizer(sft: ml_collections.ConfigDict, total_steps: int):
    """The warm-up's optimizer (AdamW at sft.lr, linear warmup, then constant) and schedule."""
    return make_optimizer(ml_collections.ConfigDict(dict(
        lr=sft.lr, b1=0.9, b2=0.999, weight_decay=0.0, grad_clip=1.0,
        warmup_steps=sft.warmup_steps, schedule="constant",
    )), total_steps)


def labelled_batches(parts: Components, config: ml_collections.ConfigDict) -> SupervisedIterator:
    """Batches of sft.batch_size problems with their answers from the first sft.num_examples
    training problems (the labelled subset), in a seeded order."""
    sft = config.sft
    n = min(sft.num_examples, len(parts.train_source))
    return SupervisedIterator(
        parts.train_source[:n], parts.formatter, sft.batch_size,
        max_completion_length=sft.max_completion_len, seed=config.seed,
    )


def device_sft_batch(batch: Any, mesh: Mesh) -> SFTBatch:
    """A host batch of the labelled iterator -> the sharded SFTBatch [B, P + C] (each process
    holds its rows of the global batch)."""
    return shard_batch(hosts.to_global(SFTBatch(
        tokens=np.concatenate([batch.prompts.tokens, batch.completion_tokens], axis=1),
        attention_mask=np.concatenate([batch.prompts.mask, batch.completion_mask], axis=1),
        response_mask=batch.completion_mask,
    ), mesh), mesh)


def supervised_warmup(
    parts: Components, config: ml_collections.ConfigDict, *, progress: bool = True
) -> tuple[nnx.State, dict[str, Any]]:
    """The warmed-up params (from the cache when present) and the warm-up's record."""
    sft = config.sft
    if sft.steps == 0:
        return parts.params, {"steps": 0, "cached": False}
    directory = os.path.join(sft.cache_dir, warmup_key(config))
    marker = os.path.join(directory, MARKER)
    if os.path.isfile(marker):
        model, _ = load_hf(directory, mesh=parts.mesh, dtype=parts.model_config.dtype,
                           param_dtype=parts.model_config.param_dtype,
                           remat=parts.model_config.remat)
        with open(marker) as f:
            record = json.load(f)
        logger.info("supervised warm-up: cache hit %s", directory)
        return nnx.state(model), {**record, "cached": True, "path": directory}
    params, record = _train(parts, config, progress)
    tmp = f"{directory}.tmp{os.getpid()}"
    save_hf(params, parts.model_config, tmp)
    if jax.process_index() == 0:
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(record, f, indent=2)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)  # atomic: a half-written warm-up is never a cache hit
    return params, {**record, "cached": False, "path": directory}


def _train(
    parts: Components, config: ml_collections.ConfigDict, progress: bool
) -> tuple[nnx.State, dict[str, Any]]:
    """Runs sft.steps updates on the first sft.num_examples training problems."""
    sft = config.sft
    iterator = labelled_batches(parts, config)
    tx, schedule = sft_optimizer(sft, sft.steps)
    state, shardings = create_state(parts.params, tx, jax.random.key(config.seed), parts.mesh)
    first = device_sft_batch(next(iterator), parts.mesh)
    step = make_sft_train_step(graphdef=parts.graphdef, tx=tx, schedule=schedule,
                               mesh=parts.mesh, state_shardings=shardings, batch_example=first)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    bar = tqdm(range(sft.steps), desc="warm-up (SFT)", disable=not (progress and hosts.is_main()),
               leave=False)
    batch, metrics = first, {}
    with jax.set_mesh(parts.mesh):
        for i in bar:
            state, metrics = step(state, batch)
            batch = device_sft_batch(next(iterator), parts.mesh)
            if i % 50 == 0 or i == sft.steps - 1:
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
    loss = float(metrics["loss"])
    record = {"steps": sft.steps, "examples": len(iterator.source), "final_loss": loss,
              "seconds": time.perf_counter() - start}
    return state.params, record
