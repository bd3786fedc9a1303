"""The process layout from the environment (resolve), for explicit, Slurm, TPU and one process."""

import os

import pytest

from trlx_jax.distributed import (
    DistributedError,
    ProcessSpec,
    resolve,
    slurm_local_device_ids,
    tasks_per_node,
)


def slurm_env(procid: int, localid: int, **extra) -> dict:
    """What srun gives task `procid` of 16 (2 nodes x 8 tasks) in job 4242."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[003-004]",
           "SLURM_STEP_NODELIST": "gpu[003-004]", "SLURM_NTASKS": "16",
           "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NODEID": "1",
           "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}
    env.update(extra)
    return env


def test_no_variables_is_one_process():
    assert resolve({}) is None
    assert resolve({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None


def test_explicit_variables():
    spec = resolve({"TRLX_COORDINATOR": "127.0.0.1:12355", "TRLX_NUM_PROCESSES": "2",
                    "TRLX_PROCESS_ID": "1"})
    assert spec == ProcessSpec("explicit", "127.0.0.1:12355", 2, 1, None)
    # Detection off: Slurm / MPI variables in the environment must not override these values.
    assert spec.initialize_kwargs() == {
        "coordinator_address": "127.0.0.1:12355", "num_processes": 2, "process_id": 1,
        "local_device_ids": None, "cluster_detection_method": "deactivate"}
    spec = resolve({"TRLX_COORDINATOR": "127.0.0.1:1", "TRLX_NUM_PROCESSES": "4",
                    "TRLX_PROCESS_ID": "3", "TRLX_LOCAL_DEVICE_IDS": "2,3",
                    **slurm_env(0, 0)})
    assert spec.source == "explicit" and spec.local_device_ids == (2, 3)


@pytest.mark.parametrize("env, message", [
    ({"TRLX_COORDINATOR": "127.0.0.1:1", "TRLX_PROCESS_ID": "0"}, "TRLX_NUM_PROCESSES"),
    ({"TRLX_COORDINATOR": "127.0.0.1", "TRLX_NUM_PROCESSES": "2", "TRLX_PROCESS_ID": "0"},
     "host:port"),
    ({"TRLX_COORDINATOR": "127.0.0.1:1", "TRLX_NUM_PROCESSES": "2", "TRLX_PROCESS_ID": "2"},
     r"\[0, TRLX_NUM_PROCESSES=2\)"),
    ({"TRLX_COORDINATOR": "127.0.0.1:1", "TRLX_NUM_PROCESSES": "two", "TRLX_PROCESS_ID": "0"},
     "not an integer"),
    ({"TRLX_COORDINATOR": "127.0.0.1:1", "TRLX_NUM_PROCESSES": "2", "TRLX_PROCESS_ID": "0",
      "TRLX_LOCAL_DEVICE_IDS": "0;1"}, "comma-separated"),
    ({"TRLX_DISTRIBUTED": "yes"}, "valid: auto, off, tpu"),
])
def test_bad_explicit_variables_say_what_to_set(env, message):
    with pytest.raises(DistributedError, match=message):
        resolve(env)


def test_slurm_one_process_per_gpu():
    spec = resolve(slurm_env(13, 5, CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7",
                             SLURM_GPUS_ON_NODE="8"))
    assert spec == ProcessSpec("slurm", None, 16, 13, (5,))
    # The coordinator is JAX's (first host of SLURM_STEP_NODELIST, port from the job id).
    assert spec.initialize_kwargs() == {
        "coordinator_address": None, "num_processes": 16, "process_id": 13,
        "local_device_ids": [5], "cluster_detection_method": "slurm"}


def test_slurm_one_process_per_node_drives_all_its_gpus():
    # JAX's default here would be [SLURM_LOCALID] = [0]: one GPU of eight.
    env = slurm_env(1, 0, SLURM_NTASKS="2", SLURM_STEP_TASKS_PER_NODE="1(x2)",
                    CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    assert resolve(env).local_device_ids == tuple(range(8))
    env = slurm_env(1, 0, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_GPUS_ON_NODE="4")
    env.pop("SLURM_STEP_TASKS_PER_NODE")
    assert resolve(env).local_device_ids == (0, 1, 2, 3)


def test_slurm_per_task_gpu_binding():
    # --gpus-per-task=1: each task sees only its own GPU (JAX's default [5] does not exist).
    env = slurm_env(13, 5, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="5")
    assert resolve(env).local_device_ids == (0,)
    # --gpu-bind=single:2 without --gpus-per-task: 2 of the step's 8 GPUs visible.
    env = slurm_env(13, 5, CUDA_VISIBLE_DEVICES="2,3", SLURM_STEP_GPUS="0,1,2,3,4,5,6,7")
    assert resolve(env).local_device_ids == (0, 1)


def test_slurm_tasks_sharing_gpus_take_contiguous_blocks():
    env = slurm_env(7, 3, SLURM_STEP_TASKS_PER_NODE="4(x2)", SLURM_NTASKS="8",
                    CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    assert slurm_local_device_ids(env) == (6, 7)
    env["CUDA_VISIBLE_DEVICES"] = "0,1,2,3,4,5"
    with pytest.raises(DistributedError, match="6 GPUs visible to 4 Slurm tasks"):
        slurm_local_device_ids(env)


def test_slurm_cpu_job_and_overrides():
    # No GPU variables (a CPU job): JAX's default one id, which the CPU backend ignores.
    assert resolve(slurm_env(3, 3)).local_device_ids == (3,)
    assert resolve(slurm_env(3, 3, TRLX_LOCAL_DEVICE_IDS="0,1")).local_device_ids == (0, 1)
    assert resolve(slurm_env(3, 3, TRLX_DISTRIBUTED="off")) is None


def test_slurm_outside_an_srun_step_is_refused():
    env = slurm_env(0, 0)
    env.pop("SLURM_STEP_NODELIST")
    with pytest.raises(DistributedError, match="launch it with srun"):
        resolve(env)


def test_tasks_per_node_lists():
    assert tasks_per_node("8") == [8]
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(DistributedError, match="tasks-per-node"):
        tasks_per_node("2x3")
    env = slurm_env(9, 1, SLURM_NTASKS="10", SLURM_STEP_TASKS_PER_NODE="8,2",
                    CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    assert slurm_local_device_ids(env) == (4, 5, 6, 7)  # node 1 has 2 tasks: 4 GPUs each


def test_tpu_vm():
    assert resolve({}, tpu_vm=True) == ProcessSpec("tpu")
    assert ProcessSpec("tpu").initialize_kwargs() == {}
    assert resolve({"TRLX_DISTRIBUTED": "tpu"}) == ProcessSpec("tpu")
    assert resolve({"TRLX_DISTRIBUTED": "off"}, tpu_vm=True) is None


def test_cli_train_reports_a_bad_layout_before_touching_devices(monkeypatch, capsys):
    from trlx_jax.cli import train

    monkeypatch.setenv("TRLX_COORDINATOR", "127.0.0.1:1")
    monkeypatch.delenv("TRLX_NUM_PROCESSES", raising=False)
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "default.py")
    assert train.main([f"--config={config}"]) == 2
    assert "TRLX_NUM_PROCESSES" in capsys.readouterr().err
