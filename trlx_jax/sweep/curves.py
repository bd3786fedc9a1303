"""Curves over seeds: a metric of metrics.jsonl per step, mean and band (± std) per configuration,
one PNG each and one with all configurations (matplotlib, no display needed)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from trlx_jax.sweep.results import Group, Run

MAIN_CURVE = "eval/accuracy"


@dataclasses.dataclass(frozen=True)
class Curve:
    """A metric over steps across seeds: per step the mean, the sample std (0 where one seed has
    the step) and how many seeds have it; `seeds[i]` the (steps, values) of run i."""

    key: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    seeds: tuple[tuple[np.ndarray, np.ndarray], ...]


def run_series(run: Run, key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` in a run's metrics.jsonl (rows lacking it skipped), each value the
    trailing mean over `smooth` points."""
    points = [(r["step"], r[key]) for r in run.metrics() if r.get(key) is not None]
    steps = np.array([p[0] for p in points], dtype=np.int64)
    values = np.array([p[1] for p in points], dtype=np.float64)
    if smooth > 1 and len(values):
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        lo = np.maximum(np.arange(1, len(values) + 1) - smooth, 0)
        values = (cumulative[1:] - cumulative[lo]) / (np.arange(1, len(values) + 1) - lo)
    return steps, values


def seed_curve(runs: Sequence[Run], key: str = MAIN_CURVE, smooth: int = 1) -> Curve:
    """`key` over the union of the runs' steps: mean, std (ddof 1) and count over seeds."""
    seeds = tuple(run_series(r, key, smooth) for r in runs)
    steps = np.unique(np.concatenate([s for s, _ in seeds] + [np.array([], np.int64)]))
    table = np.full((len(seeds), len(steps)), np.nan)
    for i, (s, v) in enumerate(seeds):
        table[i, np.searchsorted(steps, s)] = v
    count = np.sum(~np.isnan(table), axis=0)
    present = np.where(np.isnan(table), 0.0, table)
    mean = present.sum(axis=0) / np.maximum(count, 1)
    squares = np.where(np.isnan(table), 0.0, (table - mean) ** 2).sum(axis=0)
    std = np.where(count > 1, np.sqrt(squares / np.maximum(count - 1, 1)), 0.0)
    return Curve(key=key, steps=steps, mean=mean, std=std, count=count, seeds=seeds)


def _draw(ax, curve: Curve, label: str, *, seed_lines: bool) -> None:
    line, = ax.plot(curve.steps, curve.mean, label=label,
                    marker="o" if len(curve.steps) < 30 else None, markersize=3)
    ax.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std,
                    color=line.get_color(), alpha=0.2, linewidth=0)
    if seed_lines:
        for steps, values in curve.seeds:
            ax.plot(steps, values, color=line.get_color(), alpha=0.35, linewidth=0.8)


def plot_groups(groups: Sequence[Group], out_dir: str, key: str = MAIN_CURVE,
                smooth: int = 1) -> list[str]:
    """Writes out_dir/<group name>.png (mean ± std band and each seed) per configuration with
    data for `key`, and out_dir/all.png with every configuration's band; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    curves = [(g, seed_curve(g.runs, key, smooth)) for g in groups]
    curves = [(g, c) for g, c in curves if len(c.steps)]
    title = key + (f" (trailing mean of {smooth})" if smooth > 1 else "")
    written = []
    for group, curve in curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        _draw(ax, curve, f"mean ± std over {len(curve.seeds)} seed(s)", seed_lines=True)
        ax.set_title(f"{group.label}\n{title}", fontsize=9)
        written.append(_save(fig, ax, os.path.join(out_dir, f"{group.name}.png")))
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for group, curve in curves:
            _draw(ax, curve, f"{group.label} (n={len(curve.seeds)})", seed_lines=False)
        ax.set_title(title, fontsize=9)
        written.append(_save(fig, ax, os.path.join(out_dir, "all.png")))
    return written


def _save(fig, ax, path: str) -> str:
    import matplotlib.pyplot as plt

    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
