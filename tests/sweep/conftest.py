"""Hand-made run directories: the files a trainer run leaves, written directly (no training)."""

import json
import os

import pytest

from trlx_jax.config import load_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


def write_run(run_dir, overrides=(), *, config_file=DEFAULT, summary=None, metrics=(),
              steps=None):
    """A run directory: config.json of `config_file` + overrides (and run_dir), summary.json
    when `summary` is given (steps = train.steps unless `steps`), metrics.jsonl rows."""
    config = load_config(config_file, [*overrides, f"run_dir={run_dir}"])
    save_config(config, str(run_dir))
    if summary is not None:
        full = {"steps": config.train.steps if steps is None else steps,
                "seed": config.seed, "loss_name": config.loss_name, **summary}
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(full, f)
    if metrics:
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in metrics)
    return config


@pytest.fixture
def make_run():
    return write_run
