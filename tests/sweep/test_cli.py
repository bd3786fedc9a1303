"""python -m trlx_jax.cli.sweep: status, print (list / slurm / tpu), run (nothing left to run)
and aggregate, on a sweep file and hand-made run directories."""

import csv
import os
import shlex

import pytest

from trlx_jax.cli.sweep import main
from trlx_jax.sweep.commands import shell_commands, slurm_array, tpu_commands
from trlx_jax.sweep.spec import expand, load_sweep, sweep_from_dict


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "lr.py"
    path.write_text(
        "def get_sweep():\n"
        f"    return {{'config': 'configs/default.py', 'root': {str(tmp_path / 'root')!r},\n"
        "            'overrides': {'train.steps': 20},\n"
        "            'grid': {'optimizer.lr': [1e-4, 2e-4]}, 'seeds': [0, 1]}\n")
    return str(path)


def finish(make_run, job, accuracy):
    make_run(job.run_dir, job.config_overrides()[:-1], config_file=job.config_file,
             summary={"accuracy_last3_mean": accuracy},
             metrics=[{"step": s, "eval/accuracy": accuracy * s / 10} for s in (0, 5, 10)])


def test_status_and_print_forms(sweep_file, make_run, capsys, tmp_path):
    jobs = expand(load_sweep(sweep_file))
    finish(make_run, jobs[0], 0.5)
    assert main(["status", sweep_file]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["lr-0.0001/seed0", "complete", "20/20", "steps"]
    assert out[-1] == "1 complete, 3 pending of 4 jobs"

    assert main(["print", sweep_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == shell_commands(jobs[1:])
    assert shlex.split(lines[0])[:4] == ["python", "-m", "trlx_jax.cli.train",
                                         "--config=configs/default.py"]
    assert main(["print", sweep_file, "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4

    assert main(["print", sweep_file, "--form=slurm"]) == 0
    captured = capsys.readouterr()
    jobs_file = tmp_path / "root" / "slurm_jobs.txt"
    assert captured.out.strip() == (f"sbatch --array=0-2 launch/slurm_gpu.sbatch "
                                    f"--jobs_file={jobs_file}")
    assert [shlex.split(line) for line in jobs_file.read_text().splitlines()] == \
        [j.train_args() for j in jobs[1:]]

    assert main(["print", sweep_file, "--form=tpu", "--tpu_name=pod", "--tpu_zone=z"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert shlex.split(first) == [
        "launch/tpu_pod.sh", "--name=pod", "--zone=z", f"--run_dir={jobs[1].run_dir}", "run",
        *[a for a in jobs[1].train_args() if not a.startswith("--config.run_dir=")]]


def test_tpu_form_keeps_shell_variables():
    jobs = expand(sweep_from_dict({"config": "configs/default.py", "seeds": [0, 1]}, "x"))
    assert tpu_commands(jobs[:1], "$TPU_NAME", "$ZONE")[0].startswith(
        "launch/tpu_pod.sh --name=$TPU_NAME --zone=$ZONE --run_dir=")
    text, command = slurm_array(jobs, "j.txt")
    assert command == "sbatch --array=0-1 launch/slurm_gpu.sbatch --jobs_file=j.txt"
    assert len(text.splitlines()) == 2


def test_run_with_every_job_complete_launches_nothing_and_aggregates(sweep_file, make_run,
                                                                     capsys, tmp_path):
    jobs = expand(load_sweep(sweep_file))
    for job, acc in zip(jobs, [0.4, 0.6, 0.7, 0.9], strict=True):
        finish(make_run, job, acc)
    assert main(["run", sweep_file]) == 0
    out = capsys.readouterr().out
    assert out.count("skip ") == 4 and "start " not in out
    aggregate = tmp_path / "root" / "aggregate"
    table = (aggregate / "summary.md").read_text().splitlines()
    assert table[2].startswith("| lr=0.0001 | 0,1 | - | 50.0 ± 14.1 |")
    assert table[3].startswith("| lr=0.0002 | 0,1 | - | 80.0 ± 14.1 |")
    with open(aggregate / "runs.csv") as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["0", "1", "0", "1"]
    assert sorted(os.listdir(aggregate / "curves")) == ["all.png", "lr-0.0001.png",
                                                        "lr-0.0002.png"]


def test_aggregate_run_directories(tmp_path, make_run, capsys):
    for lr, seed in [(1e-4, 0), (1e-4, 1), (3e-4, 0)]:
        make_run(tmp_path / "runs" / f"{lr}-{seed}", [f"optimizer.lr={lr}", f"seed={seed}"],
                 summary={"accuracy_last3_mean": 0.5},
                 metrics=[{"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.3}])
    assert main(["aggregate", str(tmp_path / "runs"), "--curve=reward/mean", "--smooth=2"]) == 0
    out = capsys.readouterr().out
    assert "| lr=0.0001 | 0,1 |" in out and "| lr=0.0003 | 0 |" in out
    assert "3 runs, 2 configurations" in out
    assert os.path.isfile(tmp_path / "runs" / "aggregate" / "curves" / "lr-0.0003.png")
    assert main(["aggregate", str(tmp_path / "runs" / "*"), str(tmp_path / "x")]) == 2
    assert "give --out=DIR" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "runs" / "*"), f"--out={tmp_path / 'o'}"]) == 0
    assert os.path.isfile(tmp_path / "o" / "summary.csv")


def test_bad_sweep_file_exits_2(tmp_path, capsys):
    path = tmp_path / "s.py"
    path.write_text("def get_sweep():\n    return {'config': 'configs/default.py', "
                    "'grid': {'seed': [1]}}\n")
    assert main(["status", str(path)]) == 2
    assert "list seeds under \"seeds\"" in capsys.readouterr().err
