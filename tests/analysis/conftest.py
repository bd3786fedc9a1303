"""The analysis tests' helper module (analysis_testing.py) is importable from every test here;
`tiny_sweep_runs` is the session's tiny sweep (made once, see analysis_testing)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from analysis_testing import shared_tiny_sweep  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sweep_runs(tmp_path_factory, worker_id):
    """(runs directory, compilation-cache environment) of the tiny sweep."""
    return shared_tiny_sweep(tmp_path_factory, worker_id)
