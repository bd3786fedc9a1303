"""Orbax checkpoints of a run: the train state plus what the loop needs to continue exactly.

A checkpoint at RL step s holds the TrainState (params, optimizer state, update count, PRNG
key) and a JSON record (the prompt iterator's position, the step, the warm-up record). Saves
are asynchronous and atomic (orbax writes a temporary directory and renames it when complete),
so a save that was cut short is never listed; a listed checkpoint that cannot be read
(truncated or deleted files) is reported and the previous one is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from trlx_jax.trainer.state import TrainState

logger = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"


def _saveable(state: TrainState) -> TrainState:
    """The state with its typed PRNG key as raw key data (what orbax stores)."""
    return state.replace(key=jax.random.key_data(state.key))


def _abstract(state: TrainState, shardings: TrainState) -> Any:
    """ShapeDtypeStructs with shardings of the saveable form: the restore target."""
    saveable = jax.eval_shape(_saveable, state)
    # The key's sharding (replicated) fits its raw data too.
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        saveable, shardings)


class Checkpointer:
    """Periodic async saves into run_dir/checkpoints, the last `keep` kept; restore-latest."""

    def __init__(self, run_dir: str, *, keep: int) -> None:
        self.directory = os.path.abspath(os.path.join(run_dir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def steps(self) -> list[int]:
        """RL steps of the complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Starts an asynchronous save of `state` and `meta` as checkpoint `step`."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(_saveable(state)),
                                    meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def restore_latest(
        self, state: TrainState, shardings: TrainState, *, only_step: int | None = None
    ) -> tuple[int, TrainState, dict[str, Any]] | None:
        """(step, state, meta) of the newest readable checkpoint (with `only_step`: of that
        one), placed like `shardings`; None without one. `state` gives the shapes (a
        checkpoint of another model shape is an error that says so)."""
        target = _abstract(state, shardings)
        for step in reversed(self.steps()) if only_step is None else [only_step]:
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                  meta=ocp.args.JsonRestore()))
            except ValueError as e:
                if "shape" in str(e).lower():
                    raise ValueError(
                        f"checkpoint {step} in {self.directory} holds parameters of another "
                        f"shape than this config's model ({e}); use a new run_dir"
                    ) from e
                logger.warning("checkpoint %d in %s is unreadable (%s); using the previous one",
                               step, self.directory, e)
                continue
            except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous
                logger.warning("checkpoint %d in %s is unreadable (%s: %s); using the previous "
                               "one", step, self.directory, type(e).__name__, e)
                continue
            loaded = restored.state
            return step, loaded.replace(key=jax.random.wrap_key_data(loaded.key)), restored.meta
        return None

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
