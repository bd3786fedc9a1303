"""Aggregation of hand-made run directories: loading, grouping by configuration, mean +- std."""

import csv
import json
import math
import os

import pytest

from trlx_jax.sweep.results import (
    aggregate,
    derived_figures,
    group_runs,
    load_runs,
    markdown_table,
    mean_std,
    run_rows,
    write_csv,
)

ACCURACY = {"clip": [0.5, 0.6, 0.7], "troll": [0.6, 0.8, 1.0]}


@pytest.fixture
def sweep_root(tmp_path, make_run):
    """2 losses x 3 seeds complete, one troll seed-3 run interrupted (no summary.json), and an
    HF export (its own config.json) inside a run directory."""
    root = tmp_path / "sweep"
    for loss, accs in ACCURACY.items():
        for seed, acc in enumerate(accs):
            make_run(root / f"loss_name-{loss}" / f"seed{seed}",
                     [f"loss_name={loss}", f"seed={seed}", "train.steps=20"],
                     summary={"accuracy_last3_mean": acc, "accuracy_warm_start": 0.4,
                              "reward_first10": None, "seconds_total": 10.0 + seed})
    make_run(root / "loss_name-troll" / "seed3", ["loss_name=troll", "seed=3", "train.steps=20"])
    export = root / "loss_name-clip" / "seed0" / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return root


def test_load_runs_finds_run_directories_only(sweep_root):
    runs = load_runs(str(sweep_root))
    assert [os.path.relpath(r.path, sweep_root) for r in runs] == [
        "loss_name-clip/seed0", "loss_name-clip/seed1", "loss_name-clip/seed2",
        "loss_name-troll/seed0", "loss_name-troll/seed1", "loss_name-troll/seed2",
        "loss_name-troll/seed3"]
    assert [r.complete for r in runs] == [True] * 6 + [False]
    assert runs[0].config["optimizer.lr"] == 2e-4 and runs[0].config["mesh.shape"] == (-1, 1, 1)
    # A glob and repeated patterns give the same runs once.
    again = load_runs([str(sweep_root / "*" / "seed*"), str(sweep_root / "loss_name-clip")])
    assert [r.path for r in again] == [r.path for r in runs]


def test_a_summary_short_of_the_configs_steps_is_incomplete(tmp_path, make_run):
    make_run(tmp_path / "r", ["train.steps=20"], summary={}, steps=12)
    assert not load_runs(str(tmp_path / "r"))[0].complete


def test_groups_are_configurations_and_seeds_are_their_members(sweep_root):
    groups = group_runs(load_runs(str(sweep_root)))
    assert [(g.label, g.name, g.params) for g in groups] == [
        ("loss_name=clip", "loss_name-clip", {"loss_name": "clip"}),
        ("loss_name=troll", "loss_name-troll", {"loss_name": "troll"})]
    assert [[r.seed for r in g.runs] for g in groups] == [[0, 1, 2], [0, 1, 2, 3]]


def test_aggregate_means_and_sample_stds_over_complete_seeds(sweep_root):
    rows = aggregate(load_runs(str(sweep_root)))
    clip, troll = rows
    assert clip["seeds"] == [0, 1, 2] and clip["incomplete"] == 0
    assert troll["seeds"] == [0, 1, 2] and troll["incomplete"] == 1
    assert clip["accuracy_last3_mean_mean"] == pytest.approx(0.6, abs=1e-12)
    assert clip["accuracy_last3_mean_std"] == pytest.approx(0.1, abs=1e-12)
    assert troll["accuracy_last3_mean_mean"] == pytest.approx(0.8, abs=1e-12)
    assert troll["accuracy_last3_mean_std"] == pytest.approx(0.2, abs=1e-12)
    assert clip["seconds_total_mean"] == pytest.approx(11.0)
    # A figure that is null in every summary (or missing) has no mean.
    assert clip["reward_first10_mean"] is None and clip["kl_behaviour_mean_mean"] is None


def test_markdown_table_reads_mean_pm_std(sweep_root):
    table = markdown_table(aggregate(load_runs(str(sweep_root))))
    lines = table.splitlines()
    assert lines[0].startswith("| configuration | seeds | acc. warm-up % | acc. after RL")
    assert lines[2].startswith("| loss_name=clip | 0,1,2 | 40.0 ± 0.0 | 60.0 ± 10.0 | - |")
    assert lines[3].startswith("| loss_name=troll | 0,1,2 (+1 incomplete) | 40.0 ± 0.0 | "
                               "80.0 ± 20.0 |")
    assert lines[2].endswith("| 11 ± 1 |")


def test_csv_round_trip(sweep_root, tmp_path):
    runs = load_runs(str(sweep_root))
    path = write_csv(aggregate(runs), str(tmp_path / "out" / "summary.csv"))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["configuration"] for r in rows] == ["loss_name=clip", "loss_name=troll"]
    assert rows[1]["seeds"] == "0 1 2" and rows[1]["incomplete"] == "1"
    assert float(rows[1]["accuracy_last3_mean_mean"]) == pytest.approx(0.8)
    per_run = run_rows(runs)
    assert len(per_run) == 7 and per_run[-1]["complete"] is False
    assert per_run[-1]["accuracy_last3_mean"] is None


def test_mean_std_edge_cases():
    assert mean_std([]) == (None, None)
    assert mean_std([2.0]) == (2.0, None)
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))


def _history(*accuracies):
    return [{"step": 50 * i, "eval/accuracy": a} for i, a in enumerate(accuracies)]


def test_derived_figures_steps_to_target_and_collapse():
    reached = derived_figures({"accuracy_warm_start": 0.4,
                               "eval_history": _history(0.4, 0.45, 0.5, 0.7)})
    assert reached == {"steps_to_target": 100, "collapsed": 0.0}  # 0.5 is exactly +10 points
    collapsed = derived_figures({"accuracy_warm_start": 0.4,
                                 "eval_history": _history(0.4, 0.6, 0.29)})
    assert collapsed == {"steps_to_target": 50, "collapsed": 1.0}
    never = derived_figures({"accuracy_warm_start": 0.4, "eval_history": _history(0.4, 0.3),
                             "accuracy_last3_mean": 0.35})
    assert never["steps_to_target"] is None and never["collapsed"] == 0.0  # -10 is not yet
    assert never["accuracy_gain"] == pytest.approx(-0.05)
    assert derived_figures({"accuracy_warm_start": 0.4}) == {}


def test_table_counts_collapses_and_seeds_short_of_the_target(tmp_path, make_run):
    histories = [_history(0.4, 0.6), _history(0.4, 0.45), _history(0.4, 0.2)]
    for seed, history in enumerate(histories):
        make_run(tmp_path / f"seed{seed}", [f"seed={seed}", "train.steps=20"],
                 summary={"accuracy_warm_start": 0.4, "eval_history": history,
                          "seconds_per_step": 0.5})
    runs = load_runs(str(tmp_path))
    assert [r.summary["steps_to_target"] for r in runs] == [50, None, None]
    (row,) = aggregate(runs)
    assert row["collapsed_mean"] == pytest.approx(1 / 3) and row["steps_to_target_n"] == 1
    cells = markdown_table([row]).splitlines()[2].split(" | ")
    titles = markdown_table([row]).splitlines()[0].split(" | ")
    assert cells[titles.index("collapsed")] == "1/3"
    assert cells[titles.index("steps to +10 pts")] == "50 (1/3)"
    assert cells[titles.index("s / step")] == "0.500 ± 0.000"
