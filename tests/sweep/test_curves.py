"""Seed curves from metrics.jsonl and their PNGs."""

import numpy as np
import pytest

from trlx_jax.sweep.curves import plot_groups, run_series, seed_curve
from trlx_jax.sweep.results import group_runs, load_runs


@pytest.fixture
def runs(tmp_path, make_run):
    # Seed 0 evaluated at 0, 10, 20; seed 1 stopped after step 10; another lr has one seed.
    evals = {0: [0.2, 0.4, 0.6], 1: [0.4, 0.8]}
    for seed, accs in evals.items():
        make_run(tmp_path / f"a{seed}", [f"seed={seed}"], summary={},
                 metrics=[{"step": 10 * i, "eval/accuracy": a, "reward/mean": a}
                          for i, a in enumerate(accs)])
    make_run(tmp_path / "b0", ["optimizer.lr=0.001"], summary={},
             metrics=[{"step": 0, "eval/accuracy": 0.1}, {"step": 5, "reward/mean": 0.3}])
    return load_runs(str(tmp_path))


def test_seed_curve_over_the_union_of_steps(runs):
    curve = seed_curve(runs[:2], "eval/accuracy")
    np.testing.assert_array_equal(curve.steps, [0, 10, 20])
    np.testing.assert_array_equal(curve.count, [2, 2, 1])
    np.testing.assert_allclose(curve.mean, [0.3, 0.6, 0.6])
    np.testing.assert_allclose(curve.std, [np.sqrt(0.02), np.sqrt(0.08), 0.0])


def test_run_series_skips_rows_without_the_key_and_smooths_trailing(runs):
    steps, values = run_series(runs[2], "reward/mean")
    np.testing.assert_array_equal(steps, [5])
    steps, values = run_series(runs[0], "reward/mean", smooth=2)
    np.testing.assert_allclose(values, [0.2, 0.3, 0.5])


def test_plot_groups_writes_one_png_per_configuration_and_an_overlay(runs, tmp_path):
    import matplotlib.image

    groups = group_runs(runs)
    assert [g.name for g in groups] == ["lr-0.0002", "lr-0.001"]
    paths = plot_groups(groups, str(tmp_path / "plots"))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["lr-0.0002.png", "lr-0.001.png", "all.png"]
    assert all(matplotlib.image.imread(p).shape[2] == 4 for p in paths)
    # A metric no run logged gives no figure.
    assert plot_groups(groups, str(tmp_path / "none"), key="no/such") == []
