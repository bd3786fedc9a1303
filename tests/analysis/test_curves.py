"""Learning-curve figures and phase times of synthetic sweeps."""

import numpy as np
import pytest
from analysis_testing import write_run
from matplotlib.figure import Figure

from trlx_jax.analysis import curves
from trlx_jax.analysis.figures import save_figure
from trlx_jax.sweep import group_runs, load_runs


@pytest.fixture
def groups(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"clip_{seed}", loss_name="clip", seed=seed, offset=0.1 * seed)
        write_run(tmp_path, f"troll_{seed}", loss_name="troll", seed=seed)
    return group_runs(load_runs(str(tmp_path)))


def test_panels_skip_metrics_without_signal(groups):
    keys = [key for key, _ in curves.available_panels(groups)]
    assert keys == ["eval/accuracy", "reward/mean", "accuracy", "approx_kl", "clip_frac",
                    "troll_projected_frac", "entropy", "response/length_mean"]
    only_troll = [g for g in groups if "troll" in g.label]
    assert "clip_frac" not in [key for key, _ in curves.available_panels(only_troll)]


def test_learning_curves_draw_mean_and_band_per_configuration(groups, tmp_path):
    fig = curves.plot_learning_curves(groups, smooth=2)
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 8
    reward = next(ax for ax in visible if ax.get_title().startswith("training reward"))
    assert "trailing mean of 2" in reward.get_title()
    assert len(reward.lines) == 2 and len(reward.collections) == 2  # mean + band per group
    clip = next(line for line in reward.lines if "clip" in line.get_label())
    # Seeds 0 and 1 differ by 0.1 everywhere: the mean sits halfway.
    raw = np.arange(1, 7) / 6 + 0.05
    smoothed = np.concatenate([[raw[0]], (raw[1:] + raw[:-1]) / 2])
    np.testing.assert_allclose(clip.get_ydata(), smoothed)
    # The clip-fraction panel leaves TROLL out (zero throughout).
    clip_frac = next(ax for ax in visible if ax.get_title().startswith("clipped"))
    assert [line.get_label() for line in clip_frac.lines] == ["loss_name=clip (n=2)"]
    assert save_figure(fig, str(tmp_path / "out"), "curves").endswith("out/curves.png")
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0


def test_learning_curves_without_any_metric_say_so(tmp_path):
    path = write_run(tmp_path, "empty", loss_name="clip", seed=0)
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.0}\n')
    with pytest.raises(ValueError, match="none of the runs has a non-zero value"):
        curves.plot_learning_curves(group_runs(load_runs(path)))


def test_phase_seconds_take_the_median_over_steps(groups):
    seconds = curves.phase_seconds(groups[0])
    # The compiling first step (9 s of rollout) does not move the median.
    assert seconds == {"rollout": 0.5, "reward": 0.1, "logprob": 0.0, "update": 1.0}
    fig = curves.plot_phase_times(groups)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [g.label for g in groups]
    assert {p.get_label() for p in ax.containers} == {"rollout", "reward", "update"}
