"""launch/local.sh: the main job's command on this machine, configs/default.py by default."""

import os
import subprocess

from launch_testing import LAUNCH

SCRIPT = os.path.join(LAUNCH, "local.sh")


def test_runs_cli_train_with_the_default_config(clean_env):
    # --help_config lists the keys of the config cli.train was given and exits before any run.
    proc = subprocess.run(["bash", SCRIPT, "--help_config"], env=clean_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    keys = proc.stdout.split()
    assert "optimizer.lr" in keys and "loss.troll_eps" in keys


def test_help():
    proc = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: launch/local.sh")
