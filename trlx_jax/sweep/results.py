"""Run directories -> tables: load runs, group the seeds of one configuration, mean +- std.

Reads only the files every run writes (config.json, summary.json, metrics.jsonl), so runs from
a sweep, a TPU pod or a laptop aggregate the same way:

    runs = load_runs("runs/sweeps/lr")          # a root, a run directory or a glob
    rows = aggregate(runs)                       # one dict per configuration
    print(markdown_table(rows))
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trlx_jax.config import CONFIG_FILE_NAME
from trlx_jax.sweep import naming
from trlx_jax.trainer.metrics import METRICS_FILE, SUMMARY_FILE, read_metrics

# Keys that say where a run lives or how it is observed, not what it computes: runs differing
# only in these are seeds of one configuration.
NOT_CONFIGURATION = ("seed", "run_dir", "logging.", "sft.cache_dir", "data.data_dir",
                     "train.checkpoint_every", "train.keep_checkpoints",
                     "train.allow_config_change", "train.max_bad_steps",
                     "train.eval_samples_logged")


@dataclasses.dataclass(frozen=True)
class Metric:
    """A summary.json figure in the tables: its key, column title and format ("pct": percent)."""

    key: str
    title: str
    fmt: str = ".3f"


# Figures derived from each run's evaluation history (derived_figures): the steps to gain
# TARGET_GAIN greedy accuracy over the warm start, and collapse: a final evaluation more than
# COLLAPSE_DROP below the warm start (or a run stopped by non-finite steps, which writes no
# summary and so counts as incomplete).
TARGET_GAIN = 0.10
COLLAPSE_DROP = 0.10

SUMMARY_METRICS: tuple[Metric, ...] = (
    Metric("accuracy_warm_start", "acc. warm-up", "pct"),
    Metric("accuracy_last3_mean", "acc. after RL (last 3)", "pct"),
    Metric("accuracy_best", "acc. best", "pct"),
    Metric("steps_to_target", f"steps to +{100 * TARGET_GAIN:.0f} pts", ".0f"),
    Metric("collapsed", "collapsed", "count"),
    Metric("reward_first10", "reward first 10"),
    Metric("reward_last10", "reward last 10"),
    Metric("kl_behaviour_mean", "KL behaviour", ".2e"),
    Metric("trust_region_frac_mean", "trust-region frac.", "pct"),
    Metric("seconds_per_step", "s / step", ".3f"),
    Metric("seconds_total", "wall s", ".0f"),
)


def derived_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """`steps_to_target`: the first evaluated step whose greedy accuracy is at least
    TARGET_GAIN above the warm start (None: never reached); `collapsed`: 1.0 when the final
    evaluation is more than COLLAPSE_DROP below the warm start, else 0.0; `accuracy_gain`:
    the mean of the last 3 evaluations minus the warm start. {} without an evaluation
    history."""
    history = summary.get("eval_history") or []
    warm = summary.get("accuracy_warm_start")
    if warm is None or not history:
        return {}
    reached = [e["step"] for e in history
               if e["step"] > 0 and e["eval/accuracy"] >= warm + TARGET_GAIN - 1e-12]
    final = history[-1]["eval/accuracy"]
    derived = {"steps_to_target": reached[0] if reached else None,
               "collapsed": float(final < warm - COLLAPSE_DROP - 1e-12)}
    if summary.get("accuracy_last3_mean") is not None:
        # Seeds differ most in their warm start; the gain over it is what a method adds.
        derived["accuracy_gain"] = summary["accuracy_last3_mean"] - warm
    return derived


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory: its config (flat dotted keys) and summary.json (None: not written)."""

    path: str
    config: dict[str, Any]
    summary: dict[str, Any] | None

    @property
    def seed(self) -> int:
        """The run's config seed."""
        return int(self.config["seed"])

    @property
    def complete(self) -> bool:
        """summary.json is there and covers the config's train.steps."""
        steps = self.config.get("train.steps")
        return self.summary is not None and (steps is None or self.summary["steps"] >= steps)

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (one per step; [] when the run wrote none)."""
        if not os.path.isfile(os.path.join(self.path, METRICS_FILE)):
            return []
        return read_metrics(self.path)


def load_run(path: str) -> Run:
    """The Run in directory `path` (which holds config.json)."""
    with open(os.path.join(path, CONFIG_FILE_NAME)) as f:
        config = _flatten(json.load(f))
    summary = None
    summary_path = os.path.join(path, SUMMARY_FILE)
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        summary = {**summary, **derived_figures(summary)}
    return Run(path=os.path.normpath(path), config=config, summary=summary)


def _is_run_dir(path: str) -> bool:
    """Holds a trainer's config.json (an exported HF model's config.json has no seed)."""
    config_path = os.path.join(path, CONFIG_FILE_NAME)
    if not os.path.isfile(config_path):
        return False
    with open(config_path) as f:
        config = json.load(f)
    return isinstance(config, dict) and "seed" in config and "train" in config


def _run_dirs(pattern: str) -> list[str]:
    found = []
    for match in sorted(glob.glob(pattern)):
        if _is_run_dir(match):
            found.append(match)
        elif os.path.isdir(match):
            found += sorted(p for p in (os.path.dirname(c) for c in glob.glob(
                os.path.join(match, "**", CONFIG_FILE_NAME), recursive=True)) if _is_run_dir(p))
    return found


def load_runs(patterns: str | Iterable[str]) -> list[Run]:
    """Every run under `patterns`: each a run directory, a glob of them, or a directory searched
    recursively for run directories (those holding config.json); sorted by path, no repeats."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    paths = dict.fromkeys(os.path.normpath(p) for pattern in patterns
                          for p in _run_dirs(pattern))
    return [load_run(p) for p in sorted(paths)]


@dataclasses.dataclass(frozen=True)
class Group:
    """The runs of one configuration (they differ in seed only): `params` holds the config keys
    whose values tell this configuration from the others, `name` is filesystem-safe."""

    label: str
    name: str
    params: dict[str, Any]
    runs: tuple[Run, ...]


def configuration(run: Run) -> dict[str, Any]:
    """The config keys that define what a run computes (seed, paths and logging left out)."""
    return {k: v for k, v in run.config.items() if not k.startswith(NOT_CONFIGURATION)}


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by configuration, in order of first appearance."""
    keyed: dict[str, list[Run]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for run in runs:
        config = configuration(run)
        key = json.dumps(sorted(config.items()), default=str)
        keyed.setdefault(key, []).append(run)
        configs[key] = config
    all_keys = list(dict.fromkeys(k for c in configs.values() for k in c))
    varied = [k for k in all_keys
              if len({json.dumps(c.get(k), default=str) for c in configs.values()}) > 1]
    short = naming.short_keys(varied)
    groups = []
    for key, members in keyed.items():
        params = {k: configs[key].get(k) for k in varied}
        groups.append(Group(label=naming.label(params, short),
                            name=naming.point_name(params, short), params=params,
                            runs=tuple(members)))
    return groups


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for fewer than 2 values)."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(runs: Sequence[Run],
              metrics: Sequence[Metric] = SUMMARY_METRICS) -> list[dict[str, Any]]:
    """One row per configuration: label, name, the varied config keys, the seeds of its complete
    runs, the number of incomplete ones, and `<metric>_mean` / `<metric>_std` over seeds."""
    return [group_row(group, metrics) for group in group_runs(runs)]


def group_row(group: Group, metrics: Sequence[Metric] = SUMMARY_METRICS) -> dict[str, Any]:
    """One configuration's row of `aggregate`: label, name, params, the seeds of its complete
    runs, the count of incomplete ones, and `<metric>_mean` / `_std` / `_n` over those seeds."""
    done = [r for r in group.runs if r.complete]
    row: dict[str, Any] = {"configuration": group.label, "name": group.name, **group.params,
                           "seeds": [r.seed for r in done],
                           "incomplete": len(group.runs) - len(done)}
    for metric in metrics:
        values = [float(r.summary[metric.key]) for r in done
                  if r.summary.get(metric.key) is not None]
        row[f"{metric.key}_mean"], row[f"{metric.key}_std"] = mean_std(values)
        row[f"{metric.key}_n"] = len(values)
    return row


def run_rows(runs: Sequence[Run], metrics: Sequence[Metric] = SUMMARY_METRICS
             ) -> list[dict[str, Any]]:
    """One row per run: path, configuration label, seed, complete, and each metric."""
    label_of = {r.path: g.label for g in group_runs(runs) for r in g.runs}
    return [{"path": r.path, "configuration": label_of[r.path], "seed": r.seed,
             "complete": r.complete,
             **{m.key: (r.summary or {}).get(m.key) for m in metrics}} for r in runs]


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> str:
    """Writes `rows` (dicts; the union of their keys as columns) as CSV; returns the path."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v
                             for k, v in row.items()})
    return path


def _format(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if fmt == "pct" else format(value, fmt)


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   metrics: Sequence[Metric] = SUMMARY_METRICS) -> str:
    """The aggregate rows as a markdown table, `mean ± std` over seeds (percent for accuracies
    and fractions); a "count" figure (0/1 per run) shows how many of the seeds have it, and a
    figure that only some seeds have says how many (k/n); configurations whose runs are all
    incomplete show their count only."""
    titles = [m.title + (" %" if m.fmt == "pct" else "") for m in metrics]
    lines = ["| configuration | seeds | " + " | ".join(titles) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for row in rows:
        seeds = ",".join(map(str, row["seeds"])) or "-"
        if row["incomplete"]:
            seeds += f" (+{row['incomplete']} incomplete)"
        cells = []
        for m in metrics:
            mean, std = row[f"{m.key}_mean"], row[f"{m.key}_std"]
            n, seeds_done = row.get(f"{m.key}_n", 0), len(row["seeds"])
            if m.fmt == "count":
                cells.append("-" if mean is None else f"{round(mean * n)}/{n}")
                continue
            cell = _format(mean, m.fmt)
            if std is not None:
                cell += " ± " + _format(std, m.fmt)
            if 0 < n < seeds_done:
                cell += f" ({n}/{seeds_done})"
            cells.append(cell)
        lines.append(f"| {row['configuration']} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
