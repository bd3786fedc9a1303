"""The notebook tests share the analysis tests' helpers and their session's tiny sweep."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "analysis"))

from analysis_testing import shared_tiny_sweep  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sweep_runs(tmp_path_factory, worker_id):
    """(runs directory, compilation-cache environment) of the tiny sweep."""
    return shared_tiny_sweep(tmp_path_factory, worker_id)
