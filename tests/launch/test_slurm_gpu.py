"""launch/slurm_gpu.sbatch with a fake srun: its Python entry reads the Slurm variables through
trlx_jax.distributed and 2 local CPU processes form one job (the Slurm layout itself is unit
tested in tests/test_distributed.py)."""

import os
import subprocess

from launch_testing import FAKE_SRUN, LAUNCH, PROGRAM, last_json

SCRIPT = os.path.join(LAUNCH, "slurm_gpu.sbatch")


def slurm_job_env(env: dict, tmp_path, port: int) -> dict:
    """The batch step of a 1-node, 2-task array job (what sbatch gives the script), with the
    fake srun first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").symlink_to(FAKE_SRUN)
    (tmp_path / "tasks").mkdir()
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "FAKE_SRUN_LOG_DIR": str(tmp_path / "tasks"),
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "127.0.0.1", "SLURM_NNODES": "1",
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2",
            "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_ARRAY_TASK_ID": "1",
            # JAX derives the coordinator port from the job id unless this is set.
            "JAX_COORDINATOR_PORT": str(port),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_sbatch_entry_runs_two_processes_from_the_slurm_environment(tmp_path, free_port,
                                                                     clean_env):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("--config.seed=0 'first job'\n--config.seed=1 'second job'\n")
    env = slurm_job_env(clean_env, tmp_path, free_port)
    proc = subprocess.run(["bash", SCRIPT, f"--script={PROGRAM}", f"--jobs_file={jobs}",
                           "--common"], env=env, capture_output=True, text=True, timeout=120)
    tasks = tmp_path / "tasks"
    logs = "".join(open(tasks / f"task_{i}.log").read() for i in range(2)
                   if (tasks / f"task_{i}.log").exists())
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    assert (tasks / "options").read_text().split() == ["--kill-on-bad-exit=1", "--export=ALL"]
    for i in range(2):
        result = last_json(tasks / f"task_{i}.log")
        # Array task 1 ran line 2 of the jobs file after the common arguments.
        assert result == {"source": "slurm", "process": i, "processes": 2, "devices": 4,
                          "local_devices": 2, "psum": 6.0,
                          "argv": ["--common", "--config.seed=1", "second job"]}


def test_jobs_file_needs_an_array_task(tmp_path, clean_env):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("--a\n")
    proc = subprocess.run(["bash", SCRIPT, f"--jobs_file={jobs}"], env=clean_env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "needs an array job" in proc.stderr
    env = {**clean_env, "SLURM_ARRAY_TASK_ID": "5"}
    proc = subprocess.run(["bash", SCRIPT, f"--jobs_file={jobs}"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "has no line 6" in proc.stderr
