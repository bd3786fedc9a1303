"""HF checkpoints: `load_hf` (config.json + safetensors -> placed `Transformer`) and `save_hf`.

Each of our parameters corresponds to one HF tensor per layer; `_TABLE` gives its name and
`hf_dims`, the grouping of our (per-layer) dims into HF dims: q_proj is ours [D, H, Dh] and
HF's [H*Dh, D], so hf_dims = ((1, 2), (0,)). Loading computes each device's block of each
parameter straight from the safetensors files (`get_slice` on the HF tensor, then reshape and
transpose), so no host ever holds a full copy per device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from safetensors import safe_open
from safetensors.numpy import save_file

from trlx_jax.models.config import SUPPORTED_MODEL_TYPES, ModelConfig
from trlx_jax.models.sharding import RULES, Rules, param_spec
from trlx_jax.models.transformer import Transformer

_LAYER = "model.layers.{i}."
# Our state path -> (HF tensor name, hf_dims). "{i}" marks per-layer (stacked) parameters.
_TABLE: dict[tuple[str, ...], tuple[str, tuple[tuple[int, ...], ...]]] = {
    ("embed",): ("model.embed_tokens.weight", ((0,), (1,))),
    ("final_norm",): ("model.norm.weight", ((0,),)),
    ("lm_head",): ("lm_head.weight", ((1,), (0,))),
    ("layers", "attn_norm"): (_LAYER + "input_layernorm.weight", ((0,),)),
    ("layers", "mlp_norm"): (_LAYER + "post_attention_layernorm.weight", ((0,),)),
    ("layers", "attn", "q_proj"): (_LAYER + "self_attn.q_proj.weight", ((1, 2), (0,))),
    ("layers", "attn", "k_proj"): (_LAYER + "self_attn.k_proj.weight", ((1, 2), (0,))),
    ("layers", "attn", "v_proj"): (_LAYER + "self_attn.v_proj.weight", ((1, 2), (0,))),
    ("layers", "attn", "o_proj"): (_LAYER + "self_attn.o_proj.weight", ((2,), (0, 1))),
    ("layers", "attn", "q_bias"): (_LAYER + "self_attn.q_proj.bias", ((0, 1),)),
    ("layers", "attn", "k_bias"): (_LAYER + "self_attn.k_proj.bias", ((0, 1),)),
    ("layers", "attn", "v_bias"): (_LAYER + "self_attn.v_proj.bias", ((0, 1),)),
    ("layers", "attn", "o_bias"): (_LAYER + "self_attn.o_proj.bias", ((0,),)),
    ("layers", "attn", "q_norm"): (_LAYER + "self_attn.q_norm.weight", ((0,),)),
    ("layers", "attn", "k_norm"): (_LAYER + "self_attn.k_norm.weight", ((0,),)),
    ("layers", "mlp", "gate_proj"): (_LAYER + "mlp.gate_proj.weight", ((1,), (0,))),
    ("layers", "mlp", "up_proj"): (_LAYER + "mlp.up_proj.weight", ((1,), (0,))),
    ("layers", "mlp", "down_proj"): (_LAYER + "mlp.down_proj.weight", ((1,), (0,))),
    ("layers", "mlp", "gate_bias"): (_LAYER + "mlp.gate_proj.bias", ((0,),)),
    ("layers", "mlp", "up_bias"): (_LAYER + "mlp.up_proj.bias", ((0,),)),
    ("layers", "mlp", "down_bias"): (_LAYER + "mlp.down_proj.bias", ((0,),)),
}
# Buffers some checkpoints carry that hold no parameters.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_INDEX_FILE = "model.safetensors.index.json"


def _hf_shape(shape: tuple[int, ...], hf_dims: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[d] for d in group) for group in hf_dims)


def _to_hf_layout(x: np.ndarray, hf_dims: tuple[tuple[int, ...], ...]) -> np.ndarray:
    order = [d for group in hf_dims for d in group]
    return np.ascontiguousarray(x.transpose(order).reshape(_hf_shape(x.shape, hf_dims)))


def _read_block(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    shape: tuple[int, ...],
    hf_dims: tuple[tuple[int, ...], ...],
    index: tuple[slice, ...],
) -> np.ndarray:
    """Our-layout block `index` of a parameter of `shape`, read from its HF tensor via `read`.

    A merged HF dim is read over the range of its leading (outermost) part, which is exact for
    every rule that shards at most the leading part; inner parts are then sliced locally.
    """
    bounds = [s.indices(n)[:2] for s, n in zip(index, shape, strict=True)]
    hf_index, local_shape, local_index, order = [], [], [], []
    for lead, *rest in hf_dims:
        inner = math.prod(shape[d] for d in rest)
        start, stop = bounds[lead]
        hf_index.append(slice(start * inner, stop * inner))
        local_shape += [stop - start] + [shape[d] for d in rest]
        local_index += [slice(None)] + [slice(*bounds[d]) for d in rest]
        order += [lead, *rest]
    block = read(tuple(hf_index)).reshape(local_shape)[tuple(local_index)]
    return block.transpose(np.argsort(order))


class _Checkpoint:
    """Read access to the tensors of a directory of safetensors files (sharded or not)."""

    def __init__(self, path: str, stack: contextlib.ExitStack):
        index_file = os.path.join(path, _INDEX_FILE)
        if os.path.exists(index_file):
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        self.handles: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name in files:
            handle = stack.enter_context(safe_open(os.path.join(path, name), framework="numpy"))
            for key in handle.keys():
                self.handles[key] = handle
                self.shapes[key] = tuple(handle.get_slice(key).get_shape())

    def reader(self, name: str, dtype: np.dtype) -> Callable[[tuple[slice, ...]], np.ndarray]:
        """Reads a slice of tensor `name` and casts it to `dtype`."""
        tensor = self.handles[name].get_slice(name)
        return lambda index: np.asarray(tensor[index]).astype(dtype)


def _expected_tensors(state: nnx.State, num_layers: int) -> Iterator[tuple[str, tuple, Any, int]]:
    """(HF name, our path, variable, layer or -1) for every HF tensor our state needs."""
    for path, var in nnx.to_flat_state(state):
        path = tuple(str(p) for p in path)
        if path not in _TABLE:
            raise ValueError(f"no HF tensor mapping for parameter {'/'.join(path)}")
        template = _TABLE[path][0]
        if "{i}" in template:
            for i in range(num_layers):
                yield template.format(i=i), path, var, i
        else:
            yield template, path, var, -1


def _check_tensors(ckpt: _Checkpoint, state: nnx.State, config: ModelConfig, path: str) -> None:
    """Raises naming every missing/unexpected tensor or the first shape mismatch."""
    expected = {}
    for name, p, var, layer in _expected_tensors(state, config.num_layers):
        shape = tuple(var.shape[1:] if layer >= 0 else var.shape)
        expected[name] = _hf_shape(shape, _TABLE[p][1])
    ignored = {n for n in ckpt.shapes if n.endswith(_IGNORED_SUFFIXES)}
    if config.tie_word_embeddings:
        # Some tied checkpoints also store the (identical) output projection.
        ignored.add("lm_head.weight")
    missing = sorted(set(expected) - set(ckpt.shapes))
    unexpected = sorted(set(ckpt.shapes) - set(expected) - ignored)
    if missing:
        raise ValueError(f"checkpoint {path} is missing tensors: {missing}")
    if unexpected:
        raise ValueError(f"checkpoint {path} has unexpected tensors: {unexpected}")
    for name, shape in expected.items():
        if ckpt.shapes[name] != shape:
            raise ValueError(
                f"tensor {name!r} in {path}: expected shape {shape} for {config.model_type} "
                f"config, found {ckpt.shapes[name]}"
            )


def read_hf_config(path: str, **overrides: Any) -> ModelConfig:
    """`ModelConfig` from the config.json in directory `path`; `overrides` replace fields."""
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported architecture in {path}/config.json: model_type {model_type!r}; "
            f"supported: {SUPPORTED_MODEL_TYPES}"
        )
    from transformers import AutoConfig

    return ModelConfig.from_hf(AutoConfig.from_pretrained(path), **overrides)


def load_hf(
    path: str, *, mesh: Mesh | None = None, rules: Rules = RULES, **overrides: Any
) -> tuple[Transformer, ModelConfig]:
    """Loads an HF checkpoint directory -> (model, config), each parameter placed directly.

    With `mesh`, every parameter is created with `NamedSharding(mesh, spec)` from `rules`, and
    each device's block is read alone from disk; without one, on the default device.
    `overrides` are `ModelConfig` fields, e.g. `dtype="bfloat16", param_dtype="bfloat16"`.
    """
    config = read_hf_config(path, **overrides)
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    dtype = config.weight_dtype
    with contextlib.ExitStack() as stack:
        ckpt = _Checkpoint(path, stack)
        _check_tensors(ckpt, state, config, path)

        def load(p: tuple, var: nnx.Variable) -> nnx.Variable:
            p = tuple(str(k) for k in p)
            template, hf_dims = _TABLE[p]
            shape = tuple(var.shape)
            if mesh is None:
                sharding = SingleDeviceSharding(jax.devices()[0])
            else:
                spec = param_spec("/".join(p), shape, var.get_metadata("logical_axes"), mesh, rules)
                sharding = NamedSharding(mesh, spec)
            if "{i}" in template:
                readers = [ckpt.reader(template.format(i=i), dtype) for i in range(shape[0])]

                def block(index: tuple[slice, ...]) -> np.ndarray:
                    layers = range(*index[0].indices(shape[0]))
                    parts = [_read_block(readers[i], shape[1:], hf_dims, index[1:]) for i in layers]
                    return np.stack(parts)
            else:
                reader = ckpt.reader(template, dtype)

                def block(index: tuple[slice, ...]) -> np.ndarray:
                    return _read_block(reader, shape, hf_dims, index)

            value = jax.make_array_from_callback(shape, sharding, block)
            return type(var).from_metadata(value, var.get_metadata())

        state = nnx.map_state(load, state)
    return nnx.merge(graphdef, state), config


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _hf_config(config: ModelConfig) -> Any:
    """The transformers config of `config`, llama3 RoPE's context length as the integer HF
    expects (ModelConfig keeps every scaling parameter as a float; HF warns on 8192.0)."""
    scaling = tuple((k, int(v) if k == "original_max_position_embeddings" else v)
                    for k, v in config.rope_scaling)
    return dataclasses.replace(config, rope_scaling=scaling).to_hf()


def save_hf(
    model_or_state: Transformer | nnx.State,
    config: ModelConfig,
    path: str,
    *,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Writes config.json + safetensors (sharded with an index past `max_shard_bytes`) to `path`.

    The result loads with `transformers.AutoModelForCausalLM.from_pretrained(path)`. Weights
    keep their param dtype. Every process must call it (gathers); process 0 writes.
    """
    state = model_or_state
    if not isinstance(state, nnx.State):
        state = nnx.state(model_or_state)
    tensors = []  # (HF name, fetch to host in HF layout, bytes), in state order
    for name, p, var, layer in _expected_tensors(state, config.num_layers):
        hf_dims = _TABLE[p][1]
        value = var[...]
        nbytes = value.nbytes // (value.shape[0] if layer >= 0 else 1)

        def fetch(value=value, layer=layer, hf_dims=hf_dims) -> np.ndarray:
            part = value[layer] if layer >= 0 else value
            return _to_hf_layout(_to_host(part), hf_dims)

        tensors.append((name, fetch, nbytes))
    shards: list[list] = [[]]
    size = 0
    for item in tensors:
        if shards[-1] and size + item[2] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[2]
    write = jax.process_index() == 0
    if write:
        os.makedirs(path, exist_ok=True)
        _hf_config(config).save_pretrained(path)
    names = ["model.safetensors"]
    if len(shards) > 1:
        names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for file_name, shard in zip(names, shards, strict=True):
        arrays = {name: fetch() for name, fetch, _ in shard}
        if write:
            save_file(arrays, os.path.join(path, file_name), metadata={"format": "pt"})
    if write and len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t[2] for t in tensors)},
            "weight_map": {name: f for f, s in zip(names, shards, strict=True) for name, _, _ in s},
        }
        with open(os.path.join(path, _INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
