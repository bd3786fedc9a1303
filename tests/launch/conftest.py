"""Fixtures of the launcher tests: a free loopback port, an environment without any launcher's
variables. Helpers live in launch_testing.py (this directory is put on sys.path for it)."""

import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env() -> dict:
    """os.environ without TRLX_*, SLURM_* or JAX distributed variables, on the CPU."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRLX_", "SLURM_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE"))}
    env["JAX_PLATFORMS"] = "cpu"
    return env
