"""Parallelism as data: one table mapping logical axes to mesh axes ("data", "fsdp", "tensor").

Model code only names logical axes (`nnx.Param(..., logical_axes=...)` and `constrain`); this
module turns them into `PartitionSpec`s. Parameters are sharded ZeRO-3 style over "fsdp" (the
"embed" dim) and Megatron style over "tensor" (heads, MLP width, vocab); activations shard the
batch over ("data", "fsdp"). A parameter rule that does not divide its dimension is an error;
activation rules fall back to the longest dividing prefix of their mesh axes (batch sizes vary,
e.g. at evaluation), down to replication.

Activation constraints apply inside `with jax.set_mesh(mesh):`, and are no-ops without a mesh.
Meshes use `AxisType.Auto`: shardings of jitted inputs drive XLA's propagation, constraints
are hints.

Recipe for a sharded model::

    mesh = make_mesh((1, 2, 4))
    model, config = load_hf(path, mesh=mesh)          # params land with their shardings
    graphdef, state = nnx.split(model)
    shardings = state_shardings(state, mesh)          # for jit in_shardings/out_shardings
    with jax.set_mesh(mesh):
        hidden, _ = jax.jit(forward, static_argnums=0)(graphdef, state, tokens, pos, mask)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# The one table. Parameters: embed (model width) over fsdp, everything "wide" over tensor.
# Activations: batch over data+fsdp; their model width ("act_embed") stays whole.
RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    ("seq", None),
    ("cache_seq", None),
    ("act_embed", None),
)


def replace_rules(rules: Rules = RULES, **changes: MeshAxes) -> Rules:
    """`rules` with some logical axes remapped, e.g. `replace_rules(kv_heads=None)`."""
    table = dict(rules)
    unknown = sorted(set(changes) - set(table))
    if unknown:
        raise ValueError(f"unknown logical axes {unknown}; known: {sorted(table)}")
    table.update(changes)
    return tuple(table.items())


# The layout of the weights while sampling: gathered over "fsdp", "tensor" kept. Decoding reads
# every weight at every token, so ZeRO-3 weights would be all-gathered layer by layer at every
# decoded token; gathered once per rollout instead (rollout.weights="gathered"), they cost one
# all-gather and the memory of the weights split over "tensor" only.
SAMPLING_RULES: Rules = replace_rules(embed=None)


def make_mesh(shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh of `shape` (data, fsdp, tensor) over the first prod(shape) devices, Auto axes."""
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {tuple(shape)} must have one size per axis {MESH_AXES}")
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def _mesh_axes(logical: str | None, rules: Rules) -> tuple[str, ...]:
    if logical is None:
        return ()
    table = dict(rules)
    if logical not in table:
        raise ValueError(f"no sharding rule for logical axis {logical!r}; known: {sorted(table)}")
    axes = table[logical]
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def _spec(entries: list[tuple[str, ...]]) -> PartitionSpec:
    return PartitionSpec(*[None if not a else a[0] if len(a) == 1 else a for a in entries])


def logical_to_spec(logical_axes: Sequence[str | None], rules: Rules = RULES) -> PartitionSpec:
    """The PartitionSpec the rules give to `logical_axes`, without any size check."""
    return _spec([_mesh_axes(name, rules) for name in logical_axes])


def param_spec(
    name: str,
    shape: Sequence[int],
    logical_axes: Sequence[str | None],
    mesh: Mesh,
    rules: Rules = RULES,
) -> PartitionSpec:
    """PartitionSpec of parameter `name`; raises if a rule does not divide its dimension."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"parameter {name!r}: logical axes {logical_axes} vs shape {shape}")
    sizes = dict(mesh.shape)
    entries, used = [], set()
    for dim, (logical, n) in enumerate(zip(logical_axes, shape, strict=True)):
        axes = _mesh_axes(logical, rules)
        k = math.prod(sizes[a] for a in axes)
        if n % k:
            raise ValueError(
                f"cannot shard parameter {name!r}: dim {dim} ({logical!r}, size {n}) is not "
                f"divisible by mesh axes {axes} (size {k}); use another mesh or override the "
                f"rule for {logical!r}"
            )
        if used & set(axes):
            raise ValueError(f"parameter {name!r}: mesh axes {axes} used twice in {logical_axes}")
        used |= set(axes)
        entries.append(axes)
    return _spec(entries)


def _path_name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = RULES) -> nnx.State:
    """NamedSharding of every parameter, as a State of the same structure as `state`."""

    def sharding(path: tuple, var: nnx.Variable) -> nnx.Variable:
        axes = var.get_metadata("logical_axes")
        spec = param_spec(_path_name(path), var.shape, axes, mesh, rules)
        return type(var).from_metadata(NamedSharding(mesh, spec), var.get_metadata())

    return nnx.map_state(sharding, state)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = RULES) -> None:
    """Moves every parameter of `model` onto `mesh` with its rule-given sharding, in place."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))


def activation_spec(
    shape: Sequence[int], logical_axes: Sequence[str | None], rules: Rules = RULES
) -> PartitionSpec | None:
    """Spec for an activation under the current mesh (None without one), dividing fallback."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    sizes = dict(mesh.shape)
    entries = []
    for logical, n in zip(logical_axes, shape, strict=True):
        axes = tuple(a for a in _mesh_axes(logical, rules) if a in sizes)
        # Longest prefix of the mesh axes whose product divides the dimension.
        while axes and n % math.prod(sizes[a] for a in axes):
            axes = axes[:-1]
        entries.append(axes)
    return _spec(entries)


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules: Rules = RULES) -> jax.Array:
    """`with_sharding_constraint` from logical axes under the current mesh; identity without one."""
    spec = activation_spec(x.shape, logical_axes, rules)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)
