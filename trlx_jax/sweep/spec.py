"""Sweep files -> jobs: a grid and/or a list of config overrides, times seeds; one run each.

A sweep file is a Python file whose `get_sweep()` returns a dict (as configs/ files'
`get_config()` return a config), or a JSON file holding the same dict:

    def get_sweep():
        return {
            "config": "configs/arithmetic.py",          # base config file, path[:arg]
            "overrides": {"train.steps": 300},           # applied to every job
            "points": [{"config": "configs/arithmetic.py:clip"},   # a list of configurations
                       {"config": "configs/arithmetic.py:troll"}],
            "grid": {"optimizer.lr": [1e-4, 3e-4]},     # crossed with every point
            "seeds": [0, 1, 2],                          # crossed with every configuration
            "root": "runs/sweeps/lr",                    # default runs/sweeps/<name>
        }

Keys of points and grid are dotted config keys (as in `--config.KEY=VALUE`), or "config" for
another config file. Each configuration is named from its point and grid values
(`arithmetic_clip__lr-0.0003`); job run directories are ROOT/<name>/seed<S>. Paths are relative
to the working directory, as on the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import shlex
from collections.abc import Mapping
from typing import Any

from trlx_jax.sweep import naming

SWEEP_KEYS = ("name", "config", "overrides", "points", "grid", "seeds", "root")
RESERVED = {"seed": "list seeds under \"seeds\"",
            "run_dir": "set the sweep's \"root\"; run directories are ROOT/<name>/seed<S>"}


class SweepError(ValueError):
    """A sweep file that cannot be expanded; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep file (see the module docstring for the keys)."""

    name: str
    config: str
    overrides: dict[str, Any]
    points: list[dict[str, Any]]
    grid: dict[str, list[Any]]
    seeds: list[int]
    root: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of a sweep: a configuration (`name`, named by `params`) and a seed."""

    name: str
    seed: int
    config_file: str
    overrides: dict[str, Any]
    params: dict[str, Any]
    run_dir: str

    @property
    def id(self) -> str:
        """`<name>/seed<S>`: the run directory relative to the sweep root."""
        return f"{self.name}/seed{self.seed}"

    def config_overrides(self) -> list[str]:
        """`KEY=VALUE` for every override, the seed and the run directory (what load_config
        takes)."""
        items = [*self.overrides.items(), ("seed", self.seed), ("run_dir", self.run_dir)]
        return [f"{k}={naming.format_override(v)}" for k, v in items]

    def train_args(self) -> list[str]:
        """The arguments of `python -m trlx_jax.cli.train` for this job."""
        return [f"--config={self.config_file}", *(f"--config.{o}" for o in
                                                  self.config_overrides())]

    def command(self, python: str = "python") -> list[str]:
        """The job's command line, as a list of words."""
        return [python, "-m", "trlx_jax.cli.train", *self.train_args()]

    def shell(self, python: str = "python") -> str:
        """The job's command line, shell-quoted."""
        return shlex.join(self.command(python))


def _load_file(path: str) -> Mapping[str, Any]:
    if not os.path.isfile(path):
        raise SweepError(f"sweep file {path!r} does not exist (a .py file with get_sweep() or a "
                         ".json file)")
    if path.endswith(".json"):
        with open(path) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as e:
                raise SweepError(f"{path} is not valid JSON: {e}") from None
    if not path.endswith(".py"):
        raise SweepError(f"sweep file {path!r} must be a .py file with get_sweep() or a .json "
                         "file")
    spec = importlib.util.spec_from_file_location("trlx_jax_sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path} defines no get_sweep() returning the sweep's dict")
    return module.get_sweep()


def _check_keys(where: str, keys: Any) -> None:
    for key in keys:
        if not isinstance(key, str) or not key:
            raise SweepError(f"{where}: key {key!r} must be a dotted config key")
        if key in RESERVED:
            raise SweepError(f"{where}: {key!r} cannot be set there; {RESERVED[key]}")


def sweep_from_dict(spec: Mapping[str, Any], name: str) -> Sweep:
    """Checks a sweep dict and fills its defaults; `name` is used when it has none."""
    if not isinstance(spec, Mapping):
        raise SweepError(f"a sweep is a dict with keys {', '.join(SWEEP_KEYS)}; got "
                         f"{type(spec).__name__}")
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"unknown sweep keys {', '.join(unknown)}; valid: "
                         f"{', '.join(SWEEP_KEYS)}")
    if not spec.get("config"):
        raise SweepError("the sweep needs \"config\": the base config file, e.g. "
                         "configs/default.py")
    overrides = dict(spec.get("overrides") or {})
    _check_keys("overrides", overrides)
    if naming.CONFIG_KEY in overrides:
        raise SweepError("overrides: the config file is the sweep's \"config\", not an override")
    points = [dict(p) for p in spec.get("points") or [{}]]
    for i, point in enumerate(points):
        _check_keys(f"points[{i}]", point)
    grid = {k: list(v) if isinstance(v, (list, tuple)) else v
            for k, v in (spec.get("grid") or {}).items()}
    _check_keys("grid", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid[{key!r}] must be a non-empty list of values")
    seeds = spec.get("seeds", [0])
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise SweepError(f"seeds must be a non-empty list of integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds {list(seeds)} repeat a seed")
    name = spec.get("name") or name
    return Sweep(name=naming.safe(name), config=spec["config"], overrides=overrides,
                 points=points, grid=grid, seeds=list(seeds),
                 root=spec.get("root") or os.path.join("runs", "sweeps", naming.safe(name)))


def load_sweep(path: str) -> Sweep:
    """Reads a sweep file (.py with get_sweep(), or .json); named after the file by default."""
    return sweep_from_dict(_load_file(path), os.path.splitext(os.path.basename(path))[0])


def configurations(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point crossed with every grid combination: the parameters of each configuration,
    point keys first, in the order given."""
    combos = [dict(zip(sweep.grid, values, strict=True))
              for values in itertools.product(*sweep.grid.values())]
    out = []
    for i, point in enumerate(sweep.points):
        clash = sorted(set(point) & set(sweep.grid))
        if clash:
            raise SweepError(f"points[{i}] and the grid both set {', '.join(clash)}; "
                             "set each key in one place")
        out += [{**point, **combo} for combo in combos]
    return out


def expand(sweep: Sweep) -> list[Job]:
    """The sweep's jobs: each configuration x each seed, configurations in order, seeds inner."""
    configs = configurations(sweep)
    short = naming.short_keys(list(dict.fromkeys(k for c in configs for k in c)))
    names: dict[str, dict[str, Any]] = {}
    jobs = []
    for params in configs:
        name = naming.point_name(params, short)
        if name in names and names[name] != params:
            raise SweepError(f"two configurations get the name {name!r}: {names[name]} and "
                             f"{params}; make their values differ in more than punctuation")
        if name in names:
            raise SweepError(f"the configuration {params} appears twice in the sweep")
        names[name] = params
        overrides = {**sweep.overrides, **{k: v for k, v in params.items()
                                           if k != naming.CONFIG_KEY}}
        config_file = str(params.get(naming.CONFIG_KEY, sweep.config))
        for seed in sweep.seeds:
            jobs.append(Job(name=name, seed=seed, config_file=config_file, overrides=overrides,
                            params=params,
                            run_dir=os.path.join(sweep.root, name, f"seed{seed}")))
    return jobs
