"""Experiment configs: ml-collections files with `get_config()`, dotted overrides, JSON round trip.

A config file is a Python file whose `get_config(arg=None)` returns a `ConfigDict`; `path.py:arg`
passes `arg`, as with `ml_collections.config_flags`. Configs are locked after loading, so an
override or assignment with a typo raises instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

CONFIG_FILE_NAME = "config.json"


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says what to change."""


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    """Every leaf key of `config` as a dotted path (`optimizer.lr`), depth first."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from flat_keys(value, f"{path}.")
        else:
            yield path


def _key_exists(config: ml_collections.ConfigDict, dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def unknown_key_message(config: ml_collections.ConfigDict, dotted: str) -> str:
    """A message naming the unknown key `dotted` and the closest valid keys of `config`."""
    keys = list(flat_keys(config))
    leaf = dotted.rsplit(".", 1)[-1]
    # Keys with the same last part first (`lr` -> optimizer.lr, sft.lr), then spelling matches.
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    close = list(dict.fromkeys(same_leaf + difflib.get_close_matches(dotted, keys, n=3,
                                                                     cutoff=0.5)))[:4]
    hint = f" Closest valid keys: {', '.join(close)}." if close else ""
    return f"unknown config key {dotted!r}.{hint} Run with --help_config to list all keys."


def _split_override(override: str) -> tuple[str, str]:
    """`--config.a.b=1` or `a.b=1` -> ('a.b', '1')."""
    body = override.removeprefix("--").removeprefix("config.")
    if "=" not in body:
        raise ConfigError(
            f"override {override!r} has no value; write it as --config.{body}=VALUE"
        )
    key, value = body.split("=", 1)
    return key, value


def _parse(path: str, argv: Sequence[str]) -> ml_collections.ConfigDict:
    """Loads `path` through `config_flags` with `argv` overrides on a private flag registry."""
    args = ["trlx_jax", f"--config={path}", *argv]
    registry = flags.FlagValues()
    # sys_argv given explicitly: otherwise config_flags reads overrides from the process argv.
    config_flags.DEFINE_config_file(
        "config", default=None, flag_values=registry, lock_config=True, sys_argv=args
    )
    try:
        registry(args)
    except flags.Error as e:
        raise ConfigError(str(e)) from None
    return registry.config


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file and applies dotted overrides (`a.b=1` or `--config.a.b=1`); locked."""
    file_part = path.split(":", 1)[0]
    if not os.path.isfile(file_part):
        raise ConfigError(f"config file {file_part!r} does not exist (expected a .py file with "
                          "get_config(), e.g. configs/default.py)")
    base = _parse(path, [])
    argv = []
    for override in overrides:
        key, value = _split_override(override)
        if not _key_exists(base, key):
            raise ConfigError(unknown_key_message(base, key))
        argv.append(f"--config.{key}={value}")
    return _parse(path, argv) if argv else base


def save_config(config: ml_collections.ConfigDict, run_dir: str) -> str:
    """Writes `config` as `run_dir/config.json` (inf and None survive the round trip); the path."""
    os.makedirs(run_dir, exist_ok=True)
    out = os.path.join(run_dir, CONFIG_FILE_NAME)
    with open(out, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        f.write("\n")
    return out


def load_saved_config(run_dir_or_file: str) -> ml_collections.ConfigDict:
    """Reads a `config.json` written by `save_config` back into a locked ConfigDict."""
    path = run_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILE_NAME)
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    config.lock()
    return config
