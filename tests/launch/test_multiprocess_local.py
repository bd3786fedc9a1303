"""launch/multiprocess_local.sh: N local processes of one jax.distributed job on 127.0.0.1."""

import os
import subprocess

from launch_testing import LAUNCH, PROGRAM, last_json

SCRIPT = os.path.join(LAUNCH, "multiprocess_local.sh")


def test_two_processes_psum_over_four_devices(tmp_path, free_port, clean_env):
    logs = tmp_path / "logs"
    proc = subprocess.run(
        ["bash", SCRIPT, f"--script={PROGRAM}", f"--log_dir={logs}", f"--port={free_port}", "2",
         "--config.x=1", "two words"],
        env=clean_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [last_json(logs / f"process_{i}.log") for i in range(2)]
    for i, result in enumerate(results):
        # Devices 0..3 hold 0..3: the psum crossed both processes (gloo CPU collectives).
        assert result == {"source": "explicit", "process": i, "processes": 2, "devices": 4,
                          "local_devices": 2, "psum": 6.0, "argv": ["--config.x=1", "two words"]}
    assert f"coordinator 127.0.0.1:{free_port}" in proc.stderr
    assert '"process": 0' in proc.stdout  # process 0's log is shown on the terminal


def test_a_failing_process_stops_the_others_and_fails_the_launch(tmp_path, clean_env):
    program = tmp_path / "fail.py"
    program.write_text(
        "import os, sys, time\n"
        "if os.environ['TRLX_PROCESS_ID'] == '1':\n"
        "    print('process 1 gives up'); sys.exit(3)\n"
        "time.sleep(120)  # process 0 would wait for its peer forever\n")
    proc = subprocess.run(["bash", SCRIPT, f"--script={program}", f"--log_dir={tmp_path}", "2"],
                          env=clean_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "process 1 failed (exit 3)" in proc.stderr and "process 1 gives up" in proc.stderr


def test_usage_errors(clean_env):
    for args, message in [([], "give the number of processes"),
                          (["two"], "give the number of processes"),
                          (["--devices_per_process=0", "2"], "positive integer"),
                          (["--bogus", "2"], "unknown option --bogus")]:
        proc = subprocess.run(["bash", SCRIPT, *args], env=clean_env, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    proc = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: launch/multiprocess_local.sh")
