"""Multi-controller JAX: the process layout from the environment, then `jax.distributed.initialize`.

`initialize()` must run before anything touches a JAX device (cli/train.py calls it first). The
layout comes from the first of these that applies (`resolve`, a pure function of the
environment):

1. Explicit: `TRLX_COORDINATOR=host:port`, `TRLX_NUM_PROCESSES`, `TRLX_PROCESS_ID`, optionally
   `TRLX_LOCAL_DEVICE_IDS=0,1` (default: every device the process sees). Any launcher can set
   these; launch/multiprocess_local.sh does. JAX's cluster auto-detection is switched off here,
   so Slurm or MPI variables leaking into the environment cannot override these values.
2. Slurm, inside an `srun` step with more than one task. JAX's own Slurm detection
   (jax._src.clusters.SlurmCluster) derives the coordinator correctly (first host of
   SLURM_STEP_NODELIST, port from SLURM_JOB_ID or JAX_COORDINATOR_PORT), so that is left to it.
   What it gets wrong on GPUs is the devices: it always gives process SLURM_LOCALID the single
   device [SLURM_LOCALID], so one process per node drives one of its GPUs, and with per-task GPU
   binding (`--gpus-per-task`, `--gpu-bind`) every task but the first asks for a GPU it cannot
   see. `local_device_ids` is therefore always passed (see `slurm_local_device_ids`).
3. A TPU VM (`TRLX_DISTRIBUTED=tpu`, or TPU chips found with libtpu installed): plain
   `jax.distributed.initialize()`; JAX reads the pod's workers from the TPU metadata server and
   never restricts TPU devices.
4. Otherwise one process: nothing to initialize.

`TRLX_DISTRIBUTED=off` skips all of it (one process whatever the environment says).
CPU processes talk through gloo, JAX's default CPU collectives since 0.5 (jax>=0.6 here).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

MODE_VAR = "TRLX_DISTRIBUTED"
MODES = ("auto", "off", "tpu")


class DistributedError(ValueError):
    """An environment that does not describe a usable process layout; the message says why."""


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """How to call jax.distributed.initialize. None fields are derived by JAX (the coordinator
    under Slurm, everything on a TPU VM); local_device_ids None: every visible device."""

    source: str  # "explicit" | "slurm" | "tpu"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def initialize_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for jax.distributed.initialize."""
        if self.source == "tpu":
            return {}
        kwargs: dict[str, Any] = {
            "coordinator_address": self.coordinator, "num_processes": self.num_processes,
            "process_id": self.process_id,
            "local_device_ids": list(self.local_device_ids)
            if self.local_device_ids is not None else None,
        }
        # explicit: nothing to detect (and None local ids must stay "all devices");
        # slurm: only the coordinator is left to JAX, from the Slurm variables alone.
        kwargs["cluster_detection_method"] = "deactivate" if self.source == "explicit" else "slurm"
        return kwargs

    def describe(self) -> str:
        """One line for the log: source, process id / count, coordinator, devices."""
        devices = "all visible" if self.local_device_ids is None else \
            ",".join(map(str, self.local_device_ids))
        if self.source == "tpu":
            return "TPU VM: layout from the TPU metadata (jax.distributed.initialize())"
        coordinator = self.coordinator or "first host of SLURM_STEP_NODELIST"
        return (f"{self.source}: process {self.process_id} of {self.num_processes}, coordinator "
                f"{coordinator}, local devices {devices}")


def _int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer") from None


def _ids(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise DistributedError(f"{name}={text!r} must be comma-separated device ids, e.g. 0,1"
                               ) from None


def _explicit(env: Mapping[str, str]) -> ProcessSpec:
    missing = [v for v in ("TRLX_NUM_PROCESSES", "TRLX_PROCESS_ID") if not env.get(v)]
    if missing:
        raise DistributedError(f"TRLX_COORDINATOR is set but {', '.join(missing)} is not: set "
                               "all of TRLX_COORDINATOR=host:port, TRLX_NUM_PROCESSES and "
                               "TRLX_PROCESS_ID (0-based) for every process")
    coordinator = env["TRLX_COORDINATOR"]
    if not re.fullmatch(r".+:\d+", coordinator):
        raise DistributedError(f"TRLX_COORDINATOR={coordinator!r} must be host:port, e.g. "
                               "127.0.0.1:12355 (the address of process 0)")
    num, pid = _int(env, "TRLX_NUM_PROCESSES"), _int(env, "TRLX_PROCESS_ID")
    if num < 1 or not 0 <= pid < num:
        raise DistributedError(f"TRLX_PROCESS_ID={pid} must lie in [0, TRLX_NUM_PROCESSES={num})")
    ids = env.get("TRLX_LOCAL_DEVICE_IDS")
    return ProcessSpec("explicit", coordinator, num, pid,
                       _ids(ids, "TRLX_LOCAL_DEVICE_IDS") if ids else None)


def tasks_per_node(spec: str) -> list[int]:
    """Slurm's compressed tasks-per-node list, `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise DistributedError(f"cannot read the Slurm tasks-per-node list {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _count(devices: str | None) -> int | None:
    """How many devices a CUDA_VISIBLE_DEVICES-style list names (None: unset)."""
    if devices is None:
        return None
    return len([d for d in devices.split(",") if d.strip() and d.strip() != "NoDevFiles"])


def _tasks_on_this_node(env: Mapping[str, str]) -> int:
    if env.get("SLURM_NTASKS_PER_NODE"):
        return _int(env, "SLURM_NTASKS_PER_NODE")
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return 1
    counts = tasks_per_node(spec)
    if len(set(counts)) == 1:
        return counts[0]
    node = _int(env, "SLURM_NODEID")
    if node >= len(counts):
        raise DistributedError(f"SLURM_NODEID={node} is beyond the tasks-per-node list {spec!r}")
    return counts[node]


def slurm_local_device_ids(env: Mapping[str, str]) -> tuple[int, ...]:
    """The GPUs (indices among those this task sees) that Slurm task SLURM_LOCALID drives.

    - Per-task binding (`--gpus-per-task`, or this task sees fewer GPUs than the step has on
      the node): Slurm already gave the task its share, so all of them.
    - One task on the node: all its GPUs (JAX's default would take GPU 0 only).
    - T tasks sharing V visible GPUs: the task's contiguous block of V / T.
    - No GPU information (a CPU job): [SLURM_LOCALID], JAX's default, which CPUs ignore.
    """
    local_id = _int(env, "SLURM_LOCALID")
    step_gpus = _count(env.get("SLURM_STEP_GPUS"))
    node_gpus = step_gpus if step_gpus is not None else (
        _int(env, "SLURM_GPUS_ON_NODE") if env.get("SLURM_GPUS_ON_NODE") else None)
    visible = _count(env.get("CUDA_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES")))
    visible = node_gpus if visible is None else visible
    if not visible:
        return (local_id,)
    tasks = _tasks_on_this_node(env)
    bound = bool(env.get("SLURM_GPUS_PER_TASK")) or (node_gpus is not None and
                                                     visible < node_gpus)
    if bound or tasks == 1:
        return tuple(range(visible))
    if visible % tasks:
        raise DistributedError(
            f"{visible} GPUs visible to {tasks} Slurm tasks on this node: use one task per GPU "
            "(--ntasks-per-node equal to --gpus-per-node), one task per node "
            "(--ntasks-per-node=1), or set TRLX_LOCAL_DEVICE_IDS for each task")
    share = visible // tasks
    return tuple(range(local_id * share, (local_id + 1) * share))


def _slurm(env: Mapping[str, str]) -> ProcessSpec | None:
    if "SLURM_JOB_ID" not in env or "SLURM_PROCID" not in env:
        return None
    num = _int(env, "SLURM_NTASKS") if env.get("SLURM_NTASKS") else 1
    if num <= 1:
        return None
    if not env.get("SLURM_STEP_NODELIST"):
        raise DistributedError(
            f"SLURM_NTASKS={num} but this process is not an srun task (no SLURM_STEP_NODELIST), "
            f"so the other {num - 1} processes would never join: launch it with srun (see "
            "launch/slurm_gpu.sbatch), or set TRLX_DISTRIBUTED=off to run a single process")
    ids = env.get("TRLX_LOCAL_DEVICE_IDS")
    local = _ids(ids, "TRLX_LOCAL_DEVICE_IDS") if ids else slurm_local_device_ids(env)
    return ProcessSpec("slurm", None, num, _int(env, "SLURM_PROCID"), local)


def resolve(env: Mapping[str, str], *, tpu_vm: bool = False) -> ProcessSpec | None:
    """The process layout the environment describes (None: a single process); `tpu_vm` says
    whether this machine is a TPU VM (see `tpu_vm_detected`)."""
    mode = env.get(MODE_VAR, "auto") or "auto"
    if mode not in MODES:
        raise DistributedError(f"{MODE_VAR}={mode!r}; valid: {', '.join(MODES)}")
    if mode == "off":
        return None
    if env.get("TRLX_COORDINATOR"):
        return _explicit(env)
    slurm = _slurm(env)
    if slurm is not None:
        return slurm
    if mode == "tpu" or tpu_vm:
        return ProcessSpec("tpu")
    return None


def tpu_vm_detected() -> bool:
    """libtpu is installed and the machine has TPU chips (/dev/accel* on v2-v4, /dev/vfio/N on
    v5e and later), without initializing any JAX backend."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def initialize(env: Mapping[str, str] | None = None) -> ProcessSpec | None:
    """Resolves the layout from `env` (default os.environ) and initializes jax.distributed
    accordingly (once; later calls return the layout and do nothing); -> the layout used."""
    import jax

    env = os.environ if env is None else env
    spec = resolve(env, tpu_vm=env.get(MODE_VAR, "auto") == "auto" and tpu_vm_detected())
    if spec is None or jax.distributed.is_initialized():
        return spec
    logger.info("jax.distributed: %s", spec.describe())
    jax.distributed.initialize(**spec.initialize_kwargs())
    return spec
