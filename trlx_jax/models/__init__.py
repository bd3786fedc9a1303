"""Llama 3 / Qwen2 / Qwen3 decoders in Flax NNX, HF checkpoint I/O and sharding rules.

Public names load lazily (jax/flax/transformers are imported on first use):

    ModelConfig                     config.py       architecture, from/to HF configs
    Transformer, forward,           transformer.py  the model, its pure form, RoPE positions
    positions_from_mask, init_model
    KVCache, init_cache,            cache.py        the decode-path cache pytree
    next_positions
    (attention.py: the attention kernels, dense / blockwise / cuDNN / splash, and their
    choice; flops.py: model FLOPs per step; import those modules directly)
    load_hf, save_hf                hf_io.py        HF safetensors checkpoints
    make_mesh, RULES, MESH_AXES,    sharding.py     logical-axis rules -> mesh shardings
    replace_rules, state_shardings, shard_model,
    constrain
"""

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "config",
    "SUPPORTED_MODEL_TYPES": "config",
    "Transformer": "transformer",
    "forward": "transformer",
    "positions_from_mask": "transformer",
    "init_model": "transformer",
    "KVCache": "cache",
    "init_cache": "cache",
    "next_positions": "cache",
    "load_hf": "hf_io",
    "save_hf": "hf_io",
    "read_hf_config": "hf_io",
    "make_mesh": "sharding",
    "RULES": "sharding",
    "MESH_AXES": "sharding",
    "state_shardings": "sharding",
    "shard_model": "sharding",
    "constrain": "sharding",
    "replace_rules": "sharding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"trlx_jax.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'trlx_jax.models' has no attribute {name!r}")
