"""The same run as 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo) and as
1 process x 4 devices, through launch/multiprocess_local.sh; checkpoints move between them.

Each process reads its half of every prompt batch, scores its own completions and writes no
file but process 0; the runs must agree: the same summary.json (wall times and paths aside)
and the metrics of `assert_same_metrics`. A checkpoint written by 2 processes resumes in 1
process on another mesh shape, and one written by 1 process resumes in 2 processes on another
mesh shape, each continuing the reference run. Slow (five short runs, three of them as two
processes): CI runs them in its `-m slow` step.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from trainer_testing import ROOT, assert_same_metrics, override_args, tiny_overrides

pytestmark = pytest.mark.slow
SCRIPT = os.path.join(ROOT, "tests", "trainer", "multiprocess_train.py")
LAUNCHER = os.path.join(ROOT, "launch", "multiprocess_local.sh")
STEPS = 3


def _args(tmp, run_dir) -> list[str]:
    overrides = tiny_overrides(tmp / "runs")  # the task's data in tmp/tfds, shared by all runs
    del overrides["mesh.shape"]  # every device of the launch
    overrides.update({
        "run_dir": run_dir,
        "data.rewards": "length_closeness:1",
        "train.steps": STEPS,
        "train.eval_every": 2,
        "train.checkpoint_every": 2,
        "train.keep_checkpoints": 3,
        "logging.tensorboard": False,
    })
    return ["--config=configs/default.py", *(f"--config.{a}" for a in override_args(overrides))]


def _env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRLX_", "SLURM_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "trainer")]))
    return env


def run_one_process(tmp, run_dir, *extra) -> None:
    """1 process x 4 devices."""
    out = subprocess.run([sys.executable, SCRIPT, *_args(tmp, run_dir), *extra], cwd=ROOT,
                         env=_env(4), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def run_two_processes(tmp, run_dir, *extra) -> None:
    """2 processes x 2 devices on 127.0.0.1, through the launcher."""
    logs = tmp / f"logs_{os.path.basename(run_dir)}"
    out = subprocess.run(
        ["bash", LAUNCHER, "--devices_per_process=2", f"--log_dir={logs}", f"--script={SCRIPT}",
         "2", *_args(tmp, run_dir), *extra],
        cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def summary(run_dir) -> dict:
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    # Wall times and paths are this invocation's; everything else describes the run.
    drop = {"seconds_total", "seconds_warmup", "seconds_per_step", "plots"}
    s = {k: v for k, v in s.items() if k not in drop}
    # The second run finds the first one's warm-up in the shared cache.
    s["warmup"] = {k: v for k, v in s["warmup"].items() if k not in ("seconds", "path", "cached")}
    return s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    one, two = str(tmp / "one"), str(tmp / "two")
    run_one_process(tmp, one)
    run_two_processes(tmp, two)
    return tmp, one, two


def test_two_processes_finish_with_the_summary_of_one(runs):
    tmp, one, two = runs
    assert summary(two) == summary(one)
    assert_same_metrics(metrics(one), metrics(two), "2 processes x 2 devices")
    # Only process 0 wrote the files: one line per step, one TensorBoard-free run directory.
    assert [r["step"] for r in metrics(two)] == list(range(STEPS + 1))


def _resume_from_step_2(tmp, source, name) -> str:
    """A copy of `source` whose last checkpoint (step 3) and summary are gone."""
    target = str(tmp / name)
    shutil.copytree(source, target)
    shutil.rmtree(os.path.join(target, "checkpoints", str(STEPS)))
    os.remove(os.path.join(target, "summary.json"))
    return target


def test_checkpoint_of_two_processes_resumes_in_one_on_another_mesh(runs):
    tmp, one, two = runs
    target = _resume_from_step_2(tmp, two, "two_then_one")
    run_one_process(tmp, target, "--config.mesh.shape=(2,2,1)",
                    "--config.train.allow_config_change=true")
    assert summary(target)["resumed_from_step"] == 2
    assert_same_metrics(metrics(one), metrics(target), "resumed in 1 process on (2, 2, 1)")


def test_checkpoint_of_one_process_resumes_in_two_on_another_mesh(runs):
    tmp, one, two = runs
    target = _resume_from_step_2(tmp, one, "one_then_two")
    run_two_processes(tmp, target, "--config.mesh.shape=(1,4,1)",
                      "--config.train.allow_config_change=true")
    assert summary(target)["resumed_from_step"] == 2
    assert_same_metrics(metrics(one), metrics(target), "resumed in 2 processes on (1, 4, 1)")
