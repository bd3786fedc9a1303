"""launch/tpu_pod.sh --dry-run: the gcloud commands of every step, including what each worker's
process runs with."""

import os
import shlex
import subprocess

import pytest
from launch_testing import LAUNCH, ROOT

SCRIPT = os.path.join(LAUNCH, "tpu_pod.sh")
POD = ["--name=trlx-pod", "--zone=europe-west4-b", "--project=my-project"]
WHERE = ["--zone=europe-west4-b", "--project=my-project"]


def dry_run(*args: str) -> list[list[str]]:
    """The commands a dry run prints, each split back into its words."""
    proc = subprocess.run(["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(line.startswith("+ ") for line in lines), proc.stdout
    return [shlex.split(line[2:]) for line in lines]


def test_all_steps_in_order():
    train = ["--config=configs/default.py", "--config.train.steps=200",
             "--config.mesh.shape=(-1, 2, 1)"]
    commands = dry_run(*POD, "--spot", "--env=WANDB_MODE=offline",
                       "--env=LIBTPU_INIT_ARGS=--xla_tpu_flag=1 --other", "all", *train)
    create, archive, ship, install, run, mkdir, copy, delete = commands
    assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "trlx-pod", *WHERE,
                      "--accelerator-type=v5litepod-32", "--version=v2-alpha-tpuv5-lite",
                      "--spot"]
    assert archive[:2] == ["bash", "-c"]
    assert shlex.split(archive[2]) == [
        "cd", ROOT, "&&", "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
        "|", "tar", "--null", "-czf", "/tmp/trlx_jax-trlx-pod.tar.gz", "-T", "-"]
    assert ship == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/trlx_jax-trlx-pod.tar.gz",
                    "trlx-pod:~/", *WHERE, "--worker=all"]
    assert install[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "trlx-pod", *WHERE]
    assert install[8] == "--worker=all"
    assert shlex.split(install[9].removeprefix("--command=")) == [
        "mkdir", "-p", "~/trlx_jax", "&&", "tar", "-xzf", "~/trlx_jax-trlx-pod.tar.gz", "-C",
        "~/trlx_jax", "&&", "cd", "~/trlx_jax", "&&", "python3", "-m", "pip", "install", "-U",
        "jax[tpu]", "&&", "python3", "-m", "pip", "install", "-e", "."]
    # Every worker runs the same trainer command; TRLX_DISTRIBUTED=tpu makes
    # trlx_jax.distributed call jax.distributed.initialize(), which finds the other workers.
    assert run[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "trlx-pod", *WHERE,
                       "--worker=all"]
    assert run[9].startswith("--command=") and len(run) == 10
    assert shlex.split(run[9].removeprefix("--command=")) == [
        "cd", "~/trlx_jax", "&&", "env", "TRLX_DISTRIBUTED=tpu", "PYTHONUNBUFFERED=1",
        "WANDB_MODE=offline", "LIBTPU_INIT_ARGS=--xla_tpu_flag=1 --other",
        "python3", "-m", "trlx_jax.cli.train", *train, "--config.run_dir=runs/trlx-pod"]
    assert mkdir == ["mkdir", "-p", "runs/"]
    assert copy == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse",
                    "trlx-pod:~/trlx_jax/runs/trlx-pod", "runs/", *WHERE, "--worker=0"]
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "trlx-pod", *WHERE,
                      "--quiet"]


def test_single_steps_and_options():
    commands = dry_run("--name=p", "--zone=us-central2-b", "--accelerator=v4-32",
                       "--version=tpu-ubuntu2204-base", "create")
    assert commands == [["gcloud", "compute", "tpus", "tpu-vm", "create", "p",
                         "--zone=us-central2-b", "--accelerator-type=v4-32",
                         "--version=tpu-ubuntu2204-base"]]
    (run,) = dry_run("--name=p", "--zone=z", "--run_dir=/mnt/shared/runs/x", "run",
                     "--config=configs/arithmetic.py:clip")
    assert shlex.split(run[-1].removeprefix("--command="))[-2:] == [
        "--config=configs/arithmetic.py:clip", "--config.run_dir=/mnt/shared/runs/x"]
    (mkdir, copy) = dry_run("--name=p", "--zone=z", "--run_dir=runs/y", "--dest=out", "copy")
    assert mkdir == ["mkdir", "-p", "out"] and copy[5:8] == ["--recurse", "p:~/trlx_jax/runs/y",
                                                             "out"]


@pytest.mark.parametrize("args, message", [
    (["run"], "--name=NAME and --zone=ZONE are required"),
    (["--name=p", "--zone=z"], "give a STEP"),
    (["--name=p", "--zone=z", "launch"], "unknown STEP 'launch'"),
    (["--name=p", "--zone=z", "--env=novalue", "run"], "must be KEY=VALUE"),
])
def test_usage_errors(args, message):
    proc = subprocess.run(["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and message in proc.stderr


def test_help():
    proc = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: launch/tpu_pod.sh")
