"""cli.evaluate: greedy accuracy and pass@k of a run's checkpoint or of an HF directory, in
batches, written next to the policy."""

import json
from pathlib import Path

import pytest
from gsm8k_testing import ROOT, TINY_OVERRIDES, facade_run, shared_root, world_overrides

from trlx_jax.cli import evaluate as evaluate_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory, worker_id):
    return facade_run(shared_root(tmp_path_factory, worker_id))


def read_results(path):
    with open(f"{path}.json") as f:
        result = json.load(f)
    with open(f"{path}.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return result, rows


@pytest.mark.slow  # a minute of evaluation and export on 2 cores
def test_a_run_and_its_export_score_the_same(run, tmp_path, capsys):
    # 8 test problems in 2 batches of 4; pass@2 samples 2 completions per problem.
    assert evaluate_cli.main([f"--run_dir={run.run_dir}", "--batch_size=4", "--pass_k=2"]) == 0
    assert "greedy accuracy" in capsys.readouterr().out
    result, rows = read_results(f"{run.run_dir}/evaluation/test_step2")
    assert (result["step"], result["split"], result["num_problems"]) == (2, "test", 8)
    assert len(rows) == 8 and {"prompt", "completion", "answer", "correct"} <= set(rows[0])
    assert result["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 8)
    assert result["accuracy"] <= result["pass@2"] <= 1.0

    model = run.save_hf(tmp_path / "hf")
    overrides = world_overrides(Path(run.run_dir).parent, "qwen2")
    argv = [f"--model={model}", f"--config={ROOT / 'configs' / 'gsm8k.py'}:qwen2.5-0.5b",
            "--batch_size=4"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items() if k != "model.path"]
    assert evaluate_cli.main(argv) == 0
    exported, exported_rows = read_results(f"{model}/evaluation/test")
    # The same parameters, task and batches: the same greedy completions.
    assert [r["completion"] for r in exported_rows] == [r["completion"] for r in rows]
    assert exported["accuracy"] == result["accuracy"]
    assert set(TINY_OVERRIDES) <= set(overrides)


def test_merging_batches_weights_by_problem_count():
    merged = evaluate_cli.merge_metrics([
        {"eval/num_problems": 4.0, "eval/accuracy": 0.5, "eval/response/length_max": 7.0},
        {"eval/num_problems": 2.0, "eval/accuracy": 1.0, "eval/response/length_max": 9.0},
    ])
    assert merged == {"eval/num_problems": 6.0, "eval/accuracy": pytest.approx(2 / 3),
                      "eval/response/length_max": 9.0}


@pytest.mark.parametrize("argv, message", [
    (["--model=m"], "--model needs --config"),
    (["--run_dir=r", "--config=c.py"], "--run_dir evaluates with the run's own config"),
    (["--model=m", "--config=c.py", "--step=3"], "--step selects a checkpoint of --run_dir"),
    ([], "one of the arguments --run_dir --model is required"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
