"""The host <-> device boundary of a run on one or several processes (multi-controller JAX).

Every process runs the same program. Batch-like data (prompts, rewards, SFT examples) is read
per process: process p holds rows [p * L, (p + 1) * L) of each global batch (the data
iterators' split). `to_global` turns those process-local rows into one global array sharded
over the mesh's batch axes ("data", "fsdp"), `local_rows` reads back this process's rows of a
global batch array (e.g. the completions whose rewards it computes), and `gather_rows` joins
per-process host arrays (rewards, accuracies) for metrics that need every row. With one process
all of them are the identity on the whole batch, so single-process runs stay as they are.
Files are written by process 0 only (`is_main`); the processes agree on when to stop
(`any_process`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")


def multi_process() -> bool:
    """True when the run spans several JAX processes."""
    return jax.process_count() > 1


def is_main() -> bool:
    """True on the process that writes the run directory's files (process 0)."""
    return jax.process_index() == 0


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (dim 0) over the batch axes ("data", "fsdp"), the other dims whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_rows(rows: int, mesh: Mesh, what: str) -> None:
    """Refuses a multi-process global batch of `rows` that the batch axes cannot split evenly."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if multi_process() and rows % shards:
        raise ValueError(
            f"{what}: {rows} rows cannot be split over the {shards} batch shards of the mesh "
            f"{dict(mesh.shape)} across {jax.process_count()} processes; use a multiple of "
            f"{shards}"
        )


def to_global(tree: Any, mesh: Mesh) -> Any:
    """Process-local rows [L, ...] of every leaf -> global arrays [L * processes, ...] sharded
    over the batch axes; unchanged (host arrays) with one process."""
    if not multi_process():
        return tree
    sharding = row_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def _row_blocks(x: jax.Array) -> list[tuple[int, np.ndarray]]:
    """(first row, rows) of each distinct row block of `x` held by this process."""
    blocks: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0 if shard.index else 0
        blocks.setdefault(start, np.asarray(shard.data))
    return sorted(blocks.items())


def local_rows(tree: Any, mesh: Mesh) -> Any:
    """This process's rows of global batch arrays (the rows `to_global` placed from it), as
    host arrays; the whole arrays with one process."""
    if not multi_process():
        return jax.tree.map(np.asarray, tree)
    sharding = row_sharding(mesh)

    def rows(x: jax.Array) -> np.ndarray:
        x = jax.device_put(x, sharding)  # no copy when already laid out by rows
        blocks = _row_blocks(x)
        return np.concatenate([b for _, b in blocks], axis=0)

    return jax.tree.map(rows, tree)


def gather_rows(tree: Any) -> Any:
    """Per-process host arrays [L, ...] -> the concatenation over processes [L * P, ...] on
    every process (for metrics over all rows)."""
    if not multi_process():
        return tree
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one (e.g. a stop signal)."""
    if not multi_process():
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def sync(name: str) -> None:
    """Waits until every process reaches this point (e.g. after process 0 wrote a file)."""
    if multi_process():
        multihost_utils.sync_global_devices(name)


@contextmanager
def main_process_first(name: str) -> Iterator[None]:
    """Runs the block on process 0, then on the others (e.g. preparing a dataset or writing a
    tokenizer directory that every process then reads)."""
    if not is_main():
        sync(name)
    yield
    if is_main():
        sync(name)
