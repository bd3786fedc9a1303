"""PNG plots of a run's main curves from its metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from trlx_jax.trainer.metrics import read_metrics

# (file name, title, [(metric key, label)]): one figure each; keys a run lacks are skipped.
FIGURES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("reward.png", "Training reward and accuracy",
     (("reward/mean", "reward"), ("accuracy", "sample accuracy"))),
    ("eval_accuracy.png", "Greedy test accuracy", (("eval/accuracy", "greedy accuracy"),)),
    ("trust_region.png", "Trust region",
     (("approx_kl", "KL(behaviour || policy)"), ("clip_frac", "clipped / masked fraction"),
      ("troll_projected_frac", "projected fraction"))),
    ("response_length.png", "Response length",
     (("response/length_mean", "mean"), ("response/length_max", "max"))),
    ("sft_loss.png", "Supervised loss (train.algorithm=sft)", (("sft/loss", "token NLL"),)),
    ("time.png", "Seconds per phase",
     (("time/rollout", "rollout"), ("time/reward", "reward"), ("time/logprob", "log-prob"),
      ("time/update", "update"), ("time/step", "step"))),
)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_run(run_dir: str) -> list[str]:
    """Writes run_dir/plots/*.png for the curves the run has; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out_dir = os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, title, curves in FIGURES:
        series = [(label, *_series(rows, key)) for key, label in curves]
        # A curve that is 0 throughout (e.g. the clip fraction of TROLL) says nothing.
        series = [s for s in series if any(v != 0 for v in s[2])]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, steps, values in series:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
