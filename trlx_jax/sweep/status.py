"""Where each job of a sweep stands, from its run directory alone, and running the ones left.

complete     summary.json covers the config's train.steps: skipped.
interrupted  config.json is there but no complete summary (killed, preempted, failed, or
             train.steps raised): run again; the trainer resumes from its last checkpoint.
pending      nothing yet: run.
conflict     the directory holds a run of another config (the trainer would refuse it): not
             run; the detail lists the keys that differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import ml_collections

from trlx_jax.config import CONFIG_FILE_NAME, ConfigError, load_config
from trlx_jax.sweep.spec import Job, SweepError
from trlx_jax.trainer.metrics import METRICS_FILE, SUMMARY_FILE
from trlx_jax.trainer.run_dir import check_run_dir

STATES = ("complete", "interrupted", "pending", "conflict")
TO_RUN = ("interrupted", "pending")


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A job, its state (one of STATES) and a few words on why."""

    job: Job
    state: str
    detail: str


def resolve(jobs: Sequence[Job]) -> list[ml_collections.ConfigDict]:
    """Each job's full config (base file + overrides); every job's bad override is reported at
    once, before anything runs."""
    configs, errors = [], []
    for job in jobs:
        try:
            configs.append(load_config(job.config_file, job.config_overrides()))
        except ConfigError as e:
            errors.append(f"{job.id}: {e}")
    if errors:
        raise SweepError("the sweep's overrides do not apply:\n  " + "\n  ".join(errors))
    return configs


def _last_step(run_dir: str) -> int | None:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return None
    last = None
    with open(path) as f:
        for line in f:
            if line.strip():
                last = json.loads(line)["step"]
    return last


def job_status(job: Job, config: ml_collections.ConfigDict) -> JobStatus:
    """The state of `job` (whose resolved config is `config`) from its run directory."""
    steps = config.train.steps
    if not os.path.isfile(os.path.join(job.run_dir, CONFIG_FILE_NAME)):
        return JobStatus(job, "pending", "no run yet")
    try:
        check_run_dir(config)
    except ConfigError as e:
        return JobStatus(job, "conflict", str(e))
    summary_path = os.path.join(job.run_dir, SUMMARY_FILE)
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            done = json.load(f)["steps"]
        if done >= steps:
            return JobStatus(job, "complete", f"{done}/{steps} steps")
        return JobStatus(job, "interrupted", f"summary.json has {done}/{steps} steps")
    last = _last_step(job.run_dir)
    logged = "no metrics yet" if last is None else f"metrics logged to step {last}/{steps}"
    return JobStatus(job, "interrupted", f"{logged}, no summary.json")


def statuses(jobs: Sequence[Job]) -> list[JobStatus]:
    """The state of every job (configs resolved first, so a bad override fails early)."""
    return [job_status(job, config) for job, config in zip(jobs, resolve(jobs), strict=True)]


Launcher = Callable[[Job, str], int]  # (job, log file) -> exit status


def subprocess_launcher(python: str = sys.executable) -> Launcher:
    """Runs a job's `python -m trlx_jax.cli.train ...` with its output appended to the log."""

    def launch(job: Job, log_path: str) -> int:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        with open(log_path, "a") as log:
            log.write(f"$ {job.shell(python)}\n")
            log.flush()
            return subprocess.call(job.command(python), stdout=log, stderr=subprocess.STDOUT)

    return launch


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What run_jobs did with a job: its state before, the exit status (None: not run), the
    log and the seconds it took."""

    status: JobStatus
    returncode: int | None
    log: str | None
    seconds: float = 0.0


def log_path(log_dir: str, job: Job) -> str:
    """The log file of a job: LOG_DIR/<name>__seed<S>.log."""
    return os.path.join(log_dir, f"{job.name}__seed{job.seed}.log")


def run_jobs(states: Sequence[JobStatus], log_dir: str, *, launch: Launcher | None = None,
             parallel: int = 1, report: Callable[[str], None] = print) -> list[Outcome]:
    """Runs the interrupted and pending jobs, `parallel` at a time, skipping complete ones and
    conflicts; `report` gets one line per job started, finished or skipped."""
    if parallel < 1:
        raise SweepError(f"parallel={parallel} must be at least 1")
    launch = launch or subprocess_launcher()
    todo = [s for s in states if s.state in TO_RUN]
    for s in states:
        if s.state not in TO_RUN:
            report(f"skip {s.job.id}: {s.state} ({s.detail.splitlines()[0]})")

    def one(status: JobStatus) -> Outcome:
        path = log_path(log_dir, status.job)
        verb = "resume" if status.state == "interrupted" else "start"
        report(f"{verb} {status.job.id} (log {path})")
        start = time.perf_counter()
        rc = launch(status.job, path)
        seconds = time.perf_counter() - start
        report(f"{'done' if rc == 0 else f'FAILED (exit {rc})'} {status.job.id} "
               f"in {seconds:.0f} s")
        return Outcome(status, rc, path, seconds)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        ran = {o.status.job.id: o for o in pool.map(one, todo)}
    return [ran.get(s.job.id, Outcome(s, None, None)) for s in states]
