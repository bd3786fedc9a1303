"""The method comparison's report (docs/results.md): per setting a table (mean ± std over seeds)
and figures, from the run directories of a comparison sweep (launch/sweeps/compare_arithmetic.py).

    python -m trlx_jax.analysis.comparison launch/sweeps/compare_arithmetic.py \
        --out=docs/figures/compare

Configurations are read in the sweep's order and labelled by their config argument
(`<method>` in the main setting, `<method>-<setting>` in the others); the setting is the
label's suffix. The continued-SFT baseline takes SFT steps, not RL steps, so it is compared on
training seconds (wall_time.png), not on steps.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from trlx_jax.analysis.curves import plot_learning_curves
from trlx_jax.analysis.figures import new_figure, save_figure
from trlx_jax.sweep import Group, Run, load_run, seed_curve
from trlx_jax.sweep.results import Metric, group_row, markdown_table, mean_std
from trlx_jax.sweep.spec import expand, load_sweep

TABLE_METRICS: tuple[Metric, ...] = (
    Metric("accuracy_warm_start", "warm-up", "pct"),
    Metric("accuracy_final", "final", "pct"),
    Metric("accuracy_last3_mean", "last 3 evals", "pct"),
    Metric("accuracy_best", "best", "pct"),
    Metric("accuracy_gain", "gain (last 3 - warm-up)", "pct"),
    Metric("steps_to_target", "steps to +10 pts", ".0f"),
    Metric("collapsed", "collapsed", "count"),
    Metric("kl_behaviour_mean", "KL to behaviour / token", ".2e"),
    Metric("trust_region_frac_mean", "masked / projected", "pct"),
    Metric("seconds_per_step", "s / step", ".3f"),
)
# Per-step panels of the trust region: the KL and the share of tokens the region acted on.
REGION_PANELS = (("approx_kl", "KL(behaviour || policy) per token"),
                 ("clip_frac", "clipped / masked fraction"),
                 ("troll_projected_frac", "TROLL projected fraction"))


def comparison_groups(sweep_path: str) -> dict[str, list[Group]]:
    """{setting: groups} ("main" first): the sweep's configurations with the runs started so
    far, labelled by config argument (`<method>[-<setting>]`), in the sweep's order."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for job in expand(load_sweep(sweep_path)):
        label = job.config_file.rsplit(":", 1)[-1]
        setting = label.partition("-")[2] or "main"
        runs = groups.setdefault(setting, {}).setdefault(label, [])
        if os.path.isfile(os.path.join(job.run_dir, "config.json")):
            runs.append(load_run(job.run_dir))
    return {setting: [Group(label=label, name=label, params={}, runs=tuple(runs))
                      for label, runs in by_label.items() if runs]
            for setting, by_label in groups.items()}


def table(groups: Sequence[Group], metrics: Sequence[Metric] = TABLE_METRICS) -> str:
    """The markdown table of `groups`: each metric's mean ± std over complete seeds."""
    return markdown_table([group_row(g, metrics) for g in groups], metrics)


def paired_gains(groups: Sequence[Group], key: str = "accuracy_gain") -> str:
    """A markdown table of each group's `key` minus the first group's, seed by seed (the
    methods of a seed share its warm start and prompts, so the difference removes the
    seed-to-seed spread), with the mean ± std of the differences, in points."""
    def by_seed(group: Group) -> dict[int, float]:
        return {r.seed: r.summary[key] for r in group.runs
                if r.complete and r.summary.get(key) is not None}

    reference = by_seed(groups[0])
    seeds = sorted(reference)
    lines = [f"| configuration | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for group in groups[1:]:
        values = by_seed(group)
        # round(.., 1) + 0.0: a difference of round-off prints as +0.0, not -0.0
        diffs = [round(100 * (values[s] - reference[s]), 1) + 0.0 if s in values else None
                 for s in seeds]
        mean, std = mean_std([d for d in diffs if d is not None])
        cells = ["-" if d is None else f"{d:+.1f}" for d in diffs]
        summary = "-" if mean is None else f"{mean:+.1f}" + ("" if std is None else f" ± {std:.1f}")
        lines.append(f"| {group.label} | {' | '.join(cells)} | {summary} |")
    return "\n".join(lines)


def seconds_curve(runs: Sequence[Run], key: str = "eval/accuracy"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training seconds, mean, std) of `key` at the steps every run evaluated, the seconds the
    mean over runs of the cumulative `time/step` up to that step (evaluations not counted)."""
    per_run = []
    for run in runs:
        rows = run.metrics()
        seconds = np.cumsum([r.get("time/step", 0.0) for r in rows])
        per_run.append({r["step"]: (t, r[key]) for r, t in zip(rows, seconds, strict=True)
                        if r.get(key) is not None})
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    t = np.array([[p[s][0] for s in steps] for p in per_run])
    v = np.array([[p[s][1] for s in steps] for p in per_run])
    std = v.std(axis=0, ddof=1) if len(per_run) > 1 else np.zeros(len(steps))
    return t.mean(axis=0), v.mean(axis=0), std


def gain_curve(runs: Sequence[Run], key: str = "eval/accuracy"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over runs of `key` minus each run's first value (its warm start), at
    the steps every run evaluated: seeds differ most in their warm start, not in their gain."""
    per_run = []
    for run in runs:
        points = [(r["step"], r[key]) for r in run.metrics() if r.get(key) is not None]
        per_run.append({step: value - points[0][1] for step, value in points})
    steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    v = np.array([[p[s] for s in steps] for p in per_run])
    std = v.std(axis=0, ddof=1) if len(per_run) > 1 else np.zeros(len(steps))
    return np.array(steps), v.mean(axis=0), std


def plot_accuracy(groups: Sequence[Group], setting: str):
    """Two panels: greedy test accuracy, and its gain over each seed's warm start, per group
    the mean over seeds ± std."""
    fig, (left, right) = new_figure(1, 2, width=5.0, height=3.5)
    for i, group in enumerate(groups):
        color, label = f"C{i % 10}", f"{group.label} (n={len(group.runs)})"
        absolute = seed_curve(group.runs, "eval/accuracy")
        for ax, (steps, mean, std) in ((left, (absolute.steps, absolute.mean, absolute.std)),
                                       (right, gain_curve(group.runs))):
            ax.plot(steps, mean, color=color, marker="o", markersize=3, label=label)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.12,
                            linewidth=0)
    left.set_title(f"greedy test accuracy ({setting})", fontsize=9)
    right.set_title(f"gain over the warm start ({setting})", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("RL step", fontsize=8)
        ax.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle("mean over seeds, ± 1 std shaded", fontsize=9)
    return fig


def plot_wall_time(groups: Sequence[Group]):
    """Greedy test accuracy against training seconds, mean ± std over seeds, per group."""
    fig, ax = new_figure(width=6.5, height=4.0)
    for i, group in enumerate(groups):
        t, mean, std = seconds_curve(group.runs)
        color = f"C{i % 10}"
        ax.plot(t, mean, color=color, marker="o", markersize=3,
                label=f"{group.label} (n={len(group.runs)})")
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("training seconds (sum of time/step; evaluations excluded)", fontsize=8)
    ax.set_title("greedy test accuracy vs training time, mean over seeds, ± 1 std", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def write_report(sweep_path: str, out_dir: str) -> tuple[dict[str, str], list[str]]:
    """Writes the tables (table_<setting>.md) and figures (accuracy_<setting>.png,
    trust_region_<setting>.png, wall_time.png) under out_dir; -> (tables, paths written)."""
    groups = comparison_groups(sweep_path)
    tables, written = {}, []
    for setting, members in groups.items():
        if not members:
            continue
        tables[setting] = table(members)
        if len(members) > 1:
            tables[setting] += (f"\n\nGain over the warm start minus {members[0].label}'s, "
                                f"paired by seed (points):\n\n" + paired_gains(members))
        path = os.path.join(out_dir, f"table_{setting}.md")
        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(tables[setting] + "\n")
        written.append(path)
        rl = [g for g in members if all(r.config.get("train.algorithm") != "sft"
                                        for r in g.runs)]
        if not rl:
            continue
        written.append(save_figure(plot_accuracy(rl, setting), out_dir, f"accuracy_{setting}"))
        fig = plot_learning_curves(rl, REGION_PANELS, smooth=20, cols=3)
        written.append(save_figure(fig, out_dir, f"trust_region_{setting}"))
    if groups.get("main"):
        written.append(save_figure(plot_wall_time(groups["main"]), out_dir, "wall_time"))
    return tables, written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trlx_jax.analysis.comparison",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the comparison's sweep file")
    parser.add_argument("--out", required=True, help="directory for the tables and figures")
    args = parser.parse_args(argv)
    tables, written = write_report(args.sweep, args.out)
    if not tables:
        print(f"no run of {args.sweep} has started yet", file=sys.stderr)
        return 1
    for setting, text in tables.items():
        print(f"## {setting}\n\n{text}\n")
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
