"""Job states from run directories, and running the jobs left (with a fake launcher): finished
runs are skipped, interrupted ones rerun in their directory (where the trainer resumes)."""

import os
import sys
import threading
import time

import pytest

from trlx_jax.sweep.spec import SweepError, expand, sweep_from_dict
from trlx_jax.sweep.status import run_jobs, statuses, subprocess_launcher


def make_jobs(root, seeds=(0, 1, 2)):
    return expand(sweep_from_dict({"config": "configs/default.py", "root": str(root),
                                   "overrides": {"train.steps": 20},
                                   "grid": {"optimizer.lr": [1e-4, 2e-4]},
                                   "seeds": list(seeds)}, "s"))


def write_job_run(make_run, job, **kwargs):
    """The run directory `job` leaves: config.json of its exact config, and what kwargs add."""
    return make_run(job.run_dir, job.config_overrides()[:-1], config_file=job.config_file,
                    **kwargs)


@pytest.fixture
def sweep_dirs(tmp_path, make_run):
    """Six jobs: complete, killed at step 7, summary short of the steps (train.steps raised),
    pending, pending, and one whose directory holds another config."""
    jobs = make_jobs(tmp_path / "root")
    write_job_run(make_run, jobs[0], summary={})
    write_job_run(make_run, jobs[1], metrics=[{"step": s} for s in range(8)])
    write_job_run(make_run, jobs[2], summary={}, steps=12)
    make_run(jobs[5].run_dir, ["loss_name=clip", *jobs[5].config_overrides()[:-1]])
    return jobs


def test_states_from_the_run_directories(sweep_dirs):
    got = [(s.job.id, s.state, s.detail.splitlines()[0]) for s in statuses(sweep_dirs)]
    assert got[:5] == [
        ("lr-0.0001/seed0", "complete", "20/20 steps"),
        ("lr-0.0001/seed1", "interrupted", "metrics logged to step 7/20, no summary.json"),
        ("lr-0.0001/seed2", "interrupted", "summary.json has 12/20 steps"),
        ("lr-0.0002/seed0", "pending", "no run yet"),
        ("lr-0.0002/seed1", "pending", "no run yet")]
    assert got[5][:2] == ("lr-0.0002/seed2", "conflict")
    assert "loss_name: 'clip' -> 'troll'" in got[5][2]


def test_run_skips_finished_runs_and_reruns_interrupted_ones(sweep_dirs, tmp_path, make_run):
    launched = []

    def fake_launch(job, log):
        # What a trainer does in the job's directory: finish the run (resuming it if started).
        launched.append((job.id, os.path.isfile(os.path.join(job.run_dir, "config.json"))))
        write_job_run(make_run, job, summary={})
        return 0

    lines = []
    outcomes = run_jobs(statuses(sweep_dirs), str(tmp_path / "logs"), launch=fake_launch,
                        report=lines.append)
    assert launched == [("lr-0.0001/seed1", True), ("lr-0.0001/seed2", True),
                        ("lr-0.0002/seed0", False), ("lr-0.0002/seed1", False)]
    assert [o.returncode for o in outcomes] == [None, 0, 0, 0, 0, None]
    assert outcomes[1].log == str(tmp_path / "logs" / "lr-0.0001__seed1.log")
    assert lines[0] == "skip lr-0.0001/seed0: complete (20/20 steps)"
    assert lines[1].startswith("skip lr-0.0002/seed2: conflict")
    assert "resume lr-0.0001/seed1" in lines[2] and "start lr-0.0002/seed0" in lines[6]
    assert [s.state for s in statuses(sweep_dirs)] == ["complete"] * 5 + ["conflict"]
    # A second pass has nothing left to do.
    launched.clear()
    run_jobs(statuses(sweep_dirs), str(tmp_path / "logs"), launch=fake_launch,
             report=lambda _: None)
    assert launched == []


def test_failed_jobs_stay_interrupted(tmp_path, make_run):
    jobs = make_jobs(tmp_path, seeds=[0])

    def crash(job, log):
        write_job_run(make_run, job, metrics=[{"step": 0}])
        return 3

    outcomes = run_jobs(statuses(jobs), str(tmp_path / "logs"), launch=crash,
                        report=lambda _: None)
    assert [o.returncode for o in outcomes] == [3, 3]
    assert [s.state for s in statuses(jobs)] == ["interrupted", "interrupted"]


def test_parallel_runs_n_at_a_time(tmp_path):
    jobs = make_jobs(tmp_path)
    running, peak, lock = [0], [0], threading.Lock()

    def slow(job, log):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 0

    outcomes = run_jobs(statuses(jobs), str(tmp_path), launch=slow, parallel=2,
                        report=lambda _: None)
    assert peak[0] == 2 and [o.returncode for o in outcomes] == [0] * 6
    with pytest.raises(SweepError, match="at least 1"):
        run_jobs([], str(tmp_path), parallel=0)


def test_bad_overrides_are_reported_before_anything_runs(tmp_path):
    jobs = expand(sweep_from_dict({"config": "configs/default.py", "root": str(tmp_path),
                                   "grid": {"optimizer.lrr": [1e-4]}}, "s"))
    with pytest.raises(SweepError, match=r"lrr-0.0001/seed0: unknown config key "
                                         r"'optimizer.lrr'.*optimizer.lr"):
        statuses(jobs)


def test_subprocess_launcher_logs_the_command_and_its_output(tmp_path):
    job = make_jobs(tmp_path, seeds=[0])[0]
    broken = type(job)(**{**job.__dict__, "config_file": str(tmp_path / "missing.py")})
    log = tmp_path / "logs" / "job.log"
    assert subprocess_launcher(sys.executable)(broken, str(log)) == 2
    text = log.read_text()
    assert text.startswith(f"$ {sys.executable} -m trlx_jax.cli.train --config=")
    assert "missing.py' does not exist" in text
    # A retry appends to the same log.
    subprocess_launcher(sys.executable)(broken, str(log))
    assert log.read_text().count("$ ") == 2
