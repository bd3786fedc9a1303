"""Sweep files -> jobs: grid, list, seeds, naming, and the errors of bad sweep files."""

import json
import os

import pytest

from trlx_jax.config import load_config
from trlx_jax.sweep.spec import SweepError, expand, load_sweep, sweep_from_dict


def test_grid_times_seeds_named_from_the_overrides():
    sweep = sweep_from_dict({"config": "configs/default.py", "root": "out",
                             "overrides": {"train.steps": 50},
                             "grid": {"loss_name": ["troll", "clip"],
                                      "optimizer.lr": [1e-4, 3e-4]},
                             "seeds": [0, 1]}, "lr")
    jobs = expand(sweep)
    assert [j.id for j in jobs] == [
        "loss_name-troll__lr-0.0001/seed0", "loss_name-troll__lr-0.0001/seed1",
        "loss_name-troll__lr-0.0003/seed0", "loss_name-troll__lr-0.0003/seed1",
        "loss_name-clip__lr-0.0001/seed0", "loss_name-clip__lr-0.0001/seed1",
        "loss_name-clip__lr-0.0003/seed0", "loss_name-clip__lr-0.0003/seed1"]
    job = jobs[3]
    assert job.run_dir == os.path.join("out", "loss_name-troll__lr-0.0003", "seed1")
    assert job.params == {"loss_name": "troll", "optimizer.lr": 3e-4}
    assert job.command() == [
        "python", "-m", "trlx_jax.cli.train", "--config=configs/default.py",
        "--config.train.steps=50", "--config.loss_name=troll", "--config.optimizer.lr=0.0003",
        "--config.seed=1", f"--config.run_dir={job.run_dir}"]
    # The overrides are what the trainer will run with.
    config = load_config(job.config_file, job.config_overrides())
    assert (config.loss_name, config.optimizer.lr, config.seed, config.train.steps) == \
        ("troll", 3e-4, 1, 50)


def test_points_crossed_with_the_grid_and_config_files():
    sweep = sweep_from_dict({
        "config": "configs/default.py",
        "points": [{"config": "configs/arithmetic.py:clip", "loss.eps_high": 0.28},
                   {"config": "configs/arithmetic.py:troll"}],
        "grid": {"mesh.shape": [(1, 1, 1), (2, 2, 2)], "logging.progress": [False]},
    }, "methods")
    jobs = expand(sweep)
    assert [j.name for j in jobs] == [
        "arithmetic_clip__eps_high-0.28__shape-1x1x1__progress-false",
        "arithmetic_clip__eps_high-0.28__shape-2x2x2__progress-false",
        "arithmetic_troll__shape-1x1x1__progress-false",
        "arithmetic_troll__shape-2x2x2__progress-false"]
    assert [j.seed for j in jobs] == [0] * 4  # seeds default to [0]
    assert jobs[1].config_file == "configs/arithmetic.py:clip"
    assert jobs[1].train_args()[1:4] == ["--config.loss.eps_high=0.28",
                                         "--config.mesh.shape=(2, 2, 2)",
                                         "--config.logging.progress=false"]
    assert jobs[0].run_dir.startswith(os.path.join("runs", "sweeps", "methods"))
    config = load_config(jobs[1].config_file, jobs[1].config_overrides())
    assert config.mesh.shape == (2, 2, 2) and config.loss.eps_high == 0.28
    assert config.logging.progress is False and config.loss_name == "clip"


def test_shared_last_parts_keep_the_full_key_and_long_names_stay_unique():
    sweep = sweep_from_dict({"config": "c.py", "grid": {"sft.lr": [1e-3], "optimizer.lr": [2e-4],
                                                        "data.task_options": ["x" * 200, "y"]}},
                            "s")
    names = [j.name for j in expand(sweep)]
    assert names[1] == "sft.lr-0.001__optimizer.lr-0.0002__task_options-y"
    assert len(names[0]) == 120 and names[0] != names[1]
    assert names[0] == [j.name for j in expand(sweep)][0]  # stable


def test_python_and_json_sweep_files(tmp_path):
    py = tmp_path / "my_sweep.py"
    py.write_text("def get_sweep():\n    return {'config': 'configs/default.py', "
                  "'grid': {'optimizer.lr': [1e-4, 2e-4]}, 'seeds': [3]}\n")
    sweep = load_sweep(str(py))
    assert sweep.name == "my_sweep" and sweep.root == os.path.join("runs", "sweeps", "my_sweep")
    spec = {"config": "configs/default.py", "grid": {"optimizer.lr": [1e-4, 2e-4]},
            "seeds": [3], "name": "renamed"}
    js = tmp_path / "other.json"
    js.write_text(json.dumps(spec))
    from_json = load_sweep(str(js))
    assert from_json.name == "renamed"
    assert [j.id for j in expand(from_json)] == [j.id for j in expand(sweep)] == [
        "lr-0.0001/seed3", "lr-0.0002/seed3"]


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"a": [1]}}, "needs \"config\""),
    ({"config": "c.py", "gird": {}}, "unknown sweep keys gird"),
    ({"config": "c.py", "grid": {"seed": [0, 1]}}, "list seeds under \"seeds\""),
    ({"config": "c.py", "overrides": {"run_dir": "x"}}, "set the sweep's \"root\""),
    ({"config": "c.py", "grid": {"a": []}}, "non-empty list"),
    ({"config": "c.py", "grid": {"a": 1}}, "non-empty list"),
    ({"config": "c.py", "seeds": [0, 0]}, "repeat a seed"),
    ({"config": "c.py", "seeds": ["0"]}, "list of integers"),
    ({"config": "c.py", "points": [{"a": 1}], "grid": {"a": [2]}}, "both set a"),
    ({"config": "c.py", "points": [{"a": 1}, {"a": 1}]}, "appears twice"),
    ({"config": "c.py", "points": [{"a": "x y"}, {"a": "x/y"}]}, "get the name 'a-x-y'"),
    ({"config": "c.py", "overrides": {"config": "d.py"}}, "not an override"),
])
def test_bad_sweeps_say_what_to_change(spec, message):
    with pytest.raises(SweepError, match=message):
        expand(sweep_from_dict(spec, "s"))


def test_bad_sweep_files(tmp_path):
    with pytest.raises(SweepError, match="does not exist"):
        load_sweep(str(tmp_path / "none.py"))
    (tmp_path / "s.py").write_text("X = 1\n")
    with pytest.raises(SweepError, match="defines no get_sweep"):
        load_sweep(str(tmp_path / "s.py"))
    (tmp_path / "s.yaml").write_text("config: c.py\n")
    with pytest.raises(SweepError, match="must be a .py file"):
        load_sweep(str(tmp_path / "s.yaml"))
