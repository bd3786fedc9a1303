"""Paths and log reading shared by the launcher tests."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "launch")
PROGRAM = os.path.join(ROOT, "tests", "launch", "psum_program.py")
FAKE_SRUN = os.path.join(ROOT, "tests", "launch", "fake_srun.sh")


def last_json(path) -> dict:
    """The last line of a log that is a JSON object (what psum_program.py prints)."""
    with open(path) as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"{path} has no JSON line:\n{text}"
    return json.loads(lines[-1])
