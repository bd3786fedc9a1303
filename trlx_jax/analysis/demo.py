"""The small sweep a notebook trains when it is given no run directories.

`configs/arithmetic.py:<method>` (the embedded default with each paper's loss settings) for a
few methods x seeds, shortened to minutes on a CPU, one run directory per point under `root`.
Runs already complete are left as they are, so a notebook rerun only reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trlx_jax.config import ConfigError, load_config

METHODS: tuple[str, ...] = ("clip", "dppo_binary_tv", "troll")
SEEDS: tuple[int, ...] = (0, 1)
# Shortened from configs/default.py: 100 RL steps, a greedy evaluation every 20 on 200 test
# problems, checkpoints at steps 50 and 100 (troll_projection compares the last two).
OVERRIDES: dict[str, Any] = {
    "train.steps": 100,
    "train.eval_every": 20,
    "train.eval_examples": 200,
    "train.checkpoint_every": 50,
}


def config_file(name: str) -> str:
    """The path of configs/<name> in the repository this package was installed from."""
    path = Path(__file__).resolve().parents[2] / "configs" / name
    if not path.is_file():
        raise ConfigError(f"{path} is not there: the notebooks need the repository's configs/, "
                          "so clone the repository and install it with `pip install -e .` "
                          "(the notebooks' first cell does)")
    return str(path)


def run_dir_of(root: str, method: str, seed: int) -> str:
    """The run directory of one point: root/<method>__seed-<seed>."""
    return os.path.join(root, f"{method}__seed-{seed}")


def demo_sweep(root: str = "runs/notebooks", methods: Sequence[str] = METHODS,
               seeds: Sequence[int] = SEEDS, overrides: Mapping[str, Any] | None = None, *,
               progress: bool = True) -> list[str]:
    """Trains every (method, seed) whose run under `root` is not complete yet (the warm-up is
    cached under root/sft_cache, shared by the methods of a seed); returns the run directories.
    `overrides`: dotted config keys -> values, applied after OVERRIDES."""
    from trlx_jax.sweep import load_run
    from trlx_jax.trainer.loop import Trainer

    settings = {**OVERRIDES, "sft.cache_dir": os.path.join(root, "sft_cache"),
                **dict(overrides or {})}
    dirs = []
    for method in methods:
        for seed in seeds:
            run_dir = run_dir_of(root, method, seed)
            dirs.append(run_dir)
            if os.path.isfile(os.path.join(run_dir, "summary.json")) and \
                    load_run(run_dir).complete:
                continue
            changes = {**settings, "seed": seed, "run_dir": run_dir}
            config = load_config(f"{config_file('arithmetic.py')}:{method}",
                                 [f"{k}={v}" for k, v in changes.items()])
            Trainer(config, progress=progress).run()
    return dirs
