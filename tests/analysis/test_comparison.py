"""The comparison report: groups in sweep order by config argument, tables, training-seconds
curves and the figures, from hand-made run directories."""

import json
import os

import numpy as np
import pytest
from analysis_testing import write_run

from trlx_jax.analysis import comparison
from trlx_jax.sweep import Group, Run, load_run

LABELS = ("clip_higher", "troll", "sft_continued", "troll-stress")


@pytest.fixture
def sweep(tmp_path):
    """A comparison sweep file (3 RL configurations and the SFT baseline, 2 seeds) and its runs
    (troll-stress seed 1 not started)."""
    root = tmp_path / "runs"
    spec = {"config": "configs/compare_arithmetic.py",
            "points": [{"config": f"configs/compare_arithmetic.py:{label}"} for label in LABELS],
            "seeds": [0, 1], "root": str(root)}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(spec))
    for i, label in enumerate(LABELS):
        for seed in (0, 1):
            if label == "troll-stress" and seed == 1:
                continue
            write_run(root, f"compare_arithmetic_{label}/seed{seed}",
                      loss_name="troll" if "troll" in label else "clip", seed=seed,
                      offset=0.1 * i + 0.01 * seed)
    return str(path), root


def test_groups_follow_the_sweep_and_split_by_setting(sweep):
    groups = comparison.comparison_groups(sweep[0])
    assert [g.label for g in groups["main"]] == ["clip_higher", "troll", "sft_continued"]
    assert [g.label for g in groups["stress"]] == ["troll-stress"]
    assert [len(g.runs) for g in groups["main"]] == [2, 2, 2]
    assert len(groups["stress"][0].runs) == 1


def test_seconds_curve_is_the_cumulative_step_time_at_each_evaluation(sweep):
    _, root = sweep
    runs = [load_run(os.path.join(root, f"compare_arithmetic_troll/seed{s}")) for s in (0, 1)]
    t, mean, std = comparison.seconds_curve(runs)
    # write_run: evaluations at steps 0 and 6, 1.6 s per step.
    np.testing.assert_allclose(t, [0.0, 6 * 1.6])
    np.testing.assert_allclose(mean, [0.205, 0.605])
    np.testing.assert_allclose(std, [np.std([0.2, 0.21], ddof=1)] * 2)


def test_report_writes_tables_and_figures(sweep, tmp_path):
    out = tmp_path / "report"
    tables, written = comparison.write_report(sweep[0], str(out))
    assert set(tables) == {"main", "stress"}
    main, paired = tables["main"].split("\n\n", 1)
    main = main.splitlines()
    assert "paired by seed" in paired and "| troll | +0.0 | +0.0 | +0.0 ± 0.0 |" in paired
    assert main[0].startswith("| configuration | seeds | warm-up % | final % | last 3 evals % | "
                              "best % | gain (last 3 - warm-up) %")
    assert [line.split(" | ")[0] for line in main[2:]] == [
        "| clip_higher", "| troll", "| sft_continued"]
    assert main[3].split(" | ")[4] == "60.5 ± 0.7"  # troll: last-3 mean 0.5 + 0.1 + seed/100
    assert sorted(os.path.basename(p) for p in written) == sorted([
        "table_main.md", "table_stress.md", "accuracy_main.png", "accuracy_stress.png",
        "trust_region_main.png", "trust_region_stress.png", "wall_time.png"])
    assert all(os.path.getsize(p) > 0 for p in written)
    assert comparison.main([sweep[0], f"--out={out}"]) == 0


def test_paired_gains_subtract_the_first_configuration_seed_by_seed():
    def group(label, gains):
        runs = tuple(Run(path=f"{label}/seed{s}", config={"seed": s},
                         summary={"accuracy_gain": g}) for s, g in gains.items())
        return Group(label=label, name=label, params={}, runs=runs)

    lines = comparison.paired_gains([group("a", {0: 0.2, 1: 0.3}),
                                     group("b", {0: 0.25, 1: 0.2}),
                                     group("c", {0: 0.1})]).splitlines()
    assert lines[0] == "| configuration | seed 0 | seed 1 | mean ± std |"
    assert lines[2] == "| b | +5.0 | -10.0 | -2.5 ± 10.6 |"
    assert lines[3] == "| c | -10.0 | - | -10.0 |"
