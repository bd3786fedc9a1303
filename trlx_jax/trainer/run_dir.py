"""A run directory belongs to one config: refuse to resume into it with another one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import ml_collections

from trlx_jax.config import CONFIG_FILE_NAME, ConfigError

# Keys that may change between a run and its resumption (with train.allow_config_change):
# how long to run and how it is observed, never what is computed.
SAFE_TO_CHANGE = ("train.steps", "train.eval_every", "train.eval_samples_logged",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.max_bad_steps",
                  "logging.", "mesh.shape")


def _flat(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def config_differences(
    saved: dict[str, Any], config: ml_collections.ConfigDict
) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every leaf that differs, in key order."""
    new = dict(_flat(json.loads(config.to_json_best_effort())))
    old = dict(_flat(saved))
    # Neither the permission itself nor where the directory lies (runs get copied, e.g. from
    # a pod to a laptop, and resumed there) is part of what a run is.
    keys = sorted((set(old) | set(new)) - {"train.allow_config_change", "run_dir"})
    return [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in keys
            if old.get(k) != new.get(k)]


def check_run_dir(config: ml_collections.ConfigDict) -> bool:
    """True when run_dir already holds a run of this config (its config.json), False when it
    holds none; raises ConfigError listing the differing keys for a run of another config."""
    path = os.path.join(config.run_dir, CONFIG_FILE_NAME)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        saved = json.load(f)
    differences = config_differences(saved, config)
    if not differences:
        return True
    unsafe = [d for d in differences if not d[0].startswith(SAFE_TO_CHANGE)]
    if not unsafe and config.train.allow_config_change:
        return True
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in differences)
    if unsafe:
        hint = (f"these keys change what the run computes: {', '.join(d[0] for d in unsafe)}; "
                "start a new run with --config.run_dir=<another directory>")
    else:
        hint = ("to resume with them anyway, pass --config.train.allow_config_change=true "
                "(only these keys may change: " + ", ".join(SAFE_TO_CHANGE) + "*)")
    raise ConfigError(f"{config.run_dir} holds a run of another config ({path}); it differs in "
                      f"{listed}. {hint}")
