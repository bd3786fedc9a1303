"""Where metrics go: `metrics.jsonl` (one object per step), TensorBoard, optionally W&B.

Files for people are written by process 0 only; every other process gets a writer that drops
its input, so the loop calls the same methods everywhere.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import jax

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MetricsWriter:
    """Appends scalars per step to metrics.jsonl, TensorBoard event files and W&B (optional)."""

    def __init__(
        self,
        run_dir: str,
        *,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        wandb_mode: str = "online",
        config: Mapping[str, Any] | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.active = jax.process_index() == 0
        self._tb = None
        self._wandb = None
        if not self.active:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._metrics = open(os.path.join(run_dir, METRICS_FILE), "a")
        self._samples = open(os.path.join(run_dir, SAMPLES_FILE), "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: a resumed run hides the killed process's events after its checkpoint.
            self._tb = SummaryWriter(run_dir, purge_step=purge_step)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ImportError("logging.wandb=True needs wandb: pip install 'trlx_jax[wandb]'"
                                  ) from None
            self._wandb = wandb.init(project=wandb_project, dir=run_dir, mode=wandb_mode,
                                     config=dict(config or {}), reinit=True)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One row {"step": step, **scalars} (non-finite values are written as null)."""
        if not self.active:
            return
        row = {"step": int(step), **{k: _finite_or_none(float(v)) for k, v in scalars.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, float(value), int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(scalars), step=int(step))

    def write_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """A few prompt / completion / reward rows of an evaluation into samples.jsonl."""
        if not self.active:
            return
        for row in rows:
            self._samples.write(json.dumps({"step": int(step), **row}) + "\n")
        self._samples.flush()

    def close(self) -> None:
        """Flushes and closes every sink."""
        if not self.active:
            return
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def truncate_rows(run_dir: str, last_step: int) -> list[dict[str, Any]]:
    """Keeps the rows of metrics.jsonl and samples.jsonl with step <= last_step (rewritten
    atomically, process 0); returns the kept metrics rows. last_step -1 empties both."""
    kept_metrics: list[dict[str, Any]] = []
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        kept = [r for r in rows if r["step"] <= last_step]
        if name == METRICS_FILE:
            kept_metrics = kept
        if jax.process_index() == 0:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, path)
    return kept_metrics


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The rows of run_dir/metrics.jsonl."""
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_summary(run_dir: str, summary: Mapping[str, Any]) -> str:
    """Writes summary.json (process 0); returns its path."""
    path = os.path.join(run_dir, SUMMARY_FILE)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(dict(summary), f, indent=2, sort_keys=True)
            f.write("\n")
    return path


class PhaseTimer:
    """Wall-clock seconds per named phase of one iteration (`with timer("rollout"): ...`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
