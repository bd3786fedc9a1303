"""A sweep's jobs as commands for elsewhere: a plain list, a Slurm array, TPU-pod runs."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from trlx_jax.sweep.spec import Job

FORMS = ("list", "slurm", "tpu")
SLURM_SCRIPT = "launch/slurm_gpu.sbatch"
TPU_SCRIPT = "launch/tpu_pod.sh"


def shell_commands(jobs: Sequence[Job], python: str = "python") -> list[str]:
    """One shell command line per job (run them anywhere, in any order)."""
    return [job.shell(python) for job in jobs]


def slurm_array(jobs: Sequence[Job], jobs_file: str) -> tuple[str, str]:
    """(the jobs file: each job's trainer arguments on its own line, shell-quoted; the sbatch
    command of the array whose task i runs line i + 1 through launch/slurm_gpu.sbatch)."""
    text = "".join(shlex.join(job.train_args()) + "\n" for job in jobs)
    command = shlex.join(["sbatch", f"--array=0-{len(jobs) - 1}", SLURM_SCRIPT,
                          f"--jobs_file={jobs_file}"])
    return text, command


def tpu_commands(jobs: Sequence[Job], tpu_name: str, zone: str) -> list[str]:
    """One `launch/tpu_pod.sh ... run` per job, one after another on the same pod slice.
    `tpu_name` / `zone` are written unquoted, so "$TPU_NAME" stays a shell variable."""
    lines = []
    for job in jobs:
        args = [a for a in job.train_args() if not a.startswith("--config.run_dir=")]
        lines.append(f"{TPU_SCRIPT} --name={tpu_name} --zone={zone} "
                     f"--run_dir={shlex.quote(job.run_dir)} run {shlex.join(args)}")
    return lines


def jobs_file_path(root: str) -> str:
    """Where the Slurm array's jobs file of a sweep goes: ROOT/slurm_jobs.txt."""
    return os.path.join(root, "slurm_jobs.txt")
