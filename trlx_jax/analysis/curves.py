"""Learning curves of a sweep: one panel per metric, per configuration the mean over seeds and
a band of ± one standard deviation (`trlx_jax.sweep.seed_curve`), and seconds per phase."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from trlx_jax.analysis.figures import new_figure
from trlx_jax.sweep import Group, Run, seed_curve

# (metrics.jsonl key, panel title), in reading order; keys a sweep lacks are skipped.
PANELS: tuple[tuple[str, str], ...] = (
    ("eval/accuracy", "greedy test accuracy"),
    ("reward/mean", "training reward"),
    ("accuracy", "sample accuracy (training rollouts)"),
    ("approx_kl", "KL(behaviour || policy) per token"),
    ("clip_frac", "clipped / masked fraction"),
    ("troll_projected_frac", "TROLL projected fraction"),
    ("entropy", "entropy per token (nats)"),
    ("response/length_mean", "response length (tokens)"),
)
# The phases of one RL iteration as the loop times them (time/<phase> in metrics.jsonl).
PHASES: tuple[str, ...] = ("rollout", "reward", "logprob", "update")


def _has_signal(runs: Sequence[Run], key: str) -> bool:
    """Some run has a non-zero value of `key` (an all-zero curve, e.g. TROLL's clip fraction,
    says nothing)."""
    return any(r.get(key) not in (None, 0.0) for run in runs for r in run.metrics())


def available_panels(groups: Sequence[Group],
                     panels: Sequence[tuple[str, str]] = PANELS) -> list[tuple[str, str]]:
    """The panels for which some run of `groups` has a non-zero value."""
    runs = [r for g in groups for r in g.runs]
    return [(key, title) for key, title in panels if _has_signal(runs, key)]


def plot_learning_curves(groups: Sequence[Group],
                         panels: Sequence[tuple[str, str]] | None = None, *,
                         smooth: int = 1, cols: int = 2) -> Figure:
    """A grid of panels (default: every available one of PANELS): per configuration the mean
    over seeds, ± std shaded; per-step metrics as a trailing mean over `smooth` steps
    (evaluations unsmoothed). A configuration whose curve is zero throughout is left out of
    that panel."""
    panels = available_panels(groups) if panels is None else list(panels)
    if not panels:
        raise ValueError("none of the runs has a non-zero value of any of the panel metrics; "
                         "are their metrics.jsonl files empty?")
    rows = -(-len(panels) // cols)
    fig, axes = new_figure(rows, cols, width=5.0, height=3.0, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        window = 1 if key.startswith("eval/") else smooth
        for i, group in enumerate(groups):
            if not _has_signal(group.runs, key):
                continue
            curve = seed_curve(group.runs, key, window)
            color = f"C{i % 10}"
            ax.plot(curve.steps, curve.mean, color=color, label=f"{group.label} "
                    f"(n={len(group.runs)})", marker="o" if len(curve.steps) < 30 else None,
                    markersize=3)
            ax.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std,
                            color=color, alpha=0.2, linewidth=0)
        suffix = f", trailing mean of {window}" if window > 1 else ""
        ax.set_title(title + suffix, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    if any(len(g.runs) > 1 for g in groups):
        fig.suptitle("mean over seeds, ± 1 std shaded", fontsize=9)
    return fig


def phase_seconds(group: Group, phases: Sequence[str] = PHASES) -> dict[str, float]:
    """Seconds per phase of one iteration: the median over a run's steps (the first step
    compiles), then the mean over the group's seeds; phases no run timed are left out."""
    out = {}
    for phase in phases:
        medians = [float(np.median(v)) for v in (
            [r[f"time/{phase}"] for r in run.metrics() if r.get(f"time/{phase}") is not None]
            for run in group.runs) if v]
        if medians:
            out[phase] = float(np.mean(medians))
    return out


def plot_phase_times(groups: Sequence[Group], phases: Sequence[str] = PHASES) -> Figure:
    """Horizontal stacked bars: seconds per phase of one RL iteration per configuration."""
    fig, ax = new_figure(width=7.0, height=0.6 * len(groups) + 1.2)
    seconds = [phase_seconds(g, phases) for g in groups]
    left = np.zeros(len(groups))
    for j, phase in enumerate(phases):
        widths = np.array([s.get(phase, 0.0) for s in seconds])
        if not widths.any():
            continue
        ax.barh(range(len(groups)), widths, left=left, color=f"C{j}", label=phase)
        left += widths
    ax.set_yticks(range(len(groups)), [g.label for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per RL iteration (median over steps, mean over seeds)", fontsize=8)
    ax.legend(fontsize=7, ncols=len(phases), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.grid(alpha=0.3, axis="x")
    return fig
