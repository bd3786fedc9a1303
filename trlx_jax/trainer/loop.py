"""`run(config)`: warm-up, then RL iterations, evaluations, metrics, summary and plots.

One iteration reads as the data flow of design.md:
prompts -> sample G completions -> score (decode + rewards) -> advantages -> log-probs
(reference / recomputed behaviour policy, when configured) -> updates -> metrics [-> eval].
With `train.algorithm="sft"` an iteration is instead one supervised update on the warm-up's
labelled problems (the no-RL baseline), with the same evaluations, checkpoints and files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from trlx_jax.config import save_config
from trlx_jax.data import PromptIterator, RLBatch
from trlx_jax.trainer import hosts, phases
from trlx_jax.trainer.batch import LogProbSpec, train_batch
from trlx_jax.trainer.build import (
    DPPO_TOPK_LOSSES,
    TROLL_LOSSES,
    Components,
    build,
    logprob_spec,
    update_schedule,
)
from trlx_jax.trainer.checkpoint import Checkpointer
from trlx_jax.trainer.metrics import MetricsWriter, PhaseTimer, truncate_rows, write_summary
from trlx_jax.trainer.plots import plot_run
from trlx_jax.trainer.run_dir import check_run_dir
from trlx_jax.trainer.state import TrainState, create_state, make_optimizer
from trlx_jax.trainer.step import (
    UpdateSchedule,
    make_rl_train_step,
    make_sft_train_step,
    shard_batch,
)
from trlx_jax.trainer.warmup import (
    device_sft_batch,
    labelled_batches,
    sft_optimizer,
    supervised_warmup,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunState:
    """The loop's mutable state between iterations (host side)."""

    state: TrainState
    step_fn: Callable | None = None
    evals: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _StopFlag:
    """The name of a stop signal received during the loop (None: none)."""

    signal: str | None = None


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopFlag]:
    """SIGTERM / SIGINT (preemption, Ctrl-C) set the flag instead of killing the process, so
    the loop saves a checkpoint and exits cleanly; previous handlers come back afterwards."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """An RL run built from a config: `Trainer(config).run()` -> the summary dict."""

    def __init__(self, config: ml_collections.ConfigDict, *, progress: bool | None = None,
                 parts: Components | None = None, warmup_parts: Components | None = None):
        """`parts`: the components when the caller built them from `config` (the facade swaps
        in its prompts and reward); `warmup_parts`: those the warm-up reads (default: parts)."""
        self.config = config
        self.run_dir = config.run_dir
        self.progress = config.logging.progress if progress is None else progress
        self.parts: Components = build(config, self.run_dir) if parts is None else parts
        self.warmup_parts: Components = warmup_parts or self.parts
        self.spec: LogProbSpec = logprob_spec(config)
        self.updates: UpdateSchedule = update_schedule(config)
        key = jax.random.key(config.seed)
        self.rollout_key, self.state_key, self.eval_key = jax.random.split(key, 3)

    # -- phases ---------------------------------------------------------------------------

    def warm_up(self) -> tuple[nnx.State, dict[str, Any]]:
        """The starting policy: the (cached) supervised warm-up of the initial model."""
        return supervised_warmup(self.warmup_parts, self.config, progress=self.progress)

    def evaluate(self, params: nnx.State, eval_prompts: RLBatch, step: int):
        """Greedy accuracy (and pass@k) on the held-out prompts."""
        t = self.config.train
        return phases.evaluate(
            self.parts, params, eval_prompts, jax.random.fold_in(self.eval_key, step),
            max_new_tokens=self.config.rollout.max_new_tokens, pass_k=t.eval_pass_k,
            samples_logged=t.eval_samples_logged, weights=self.config.rollout.weights,
        )

    def iteration(self, run: RunState, prompts: RLBatch, step: int,
                  ref_params: nnx.State | None) -> dict[str, float]:
        """One RL iteration on a prompt batch; -> its metrics (host floats)."""
        c, parts, timer = self.config, self.parts, PhaseTimer()
        g = c.rollout.num_samples
        with timer("rollout"):
            rollout = phases.sample(parts, run.state.params, prompts,
                                    jax.random.fold_in(self.rollout_key, step), num_samples=g,
                                    max_new_tokens=c.rollout.max_new_tokens,
                                    weights=c.rollout.weights)
            phases.check_rollout(rollout, self.spec, needs_record=c.loss_name in
                                 TROLL_LOSSES + DPPO_TOPK_LOSSES)
            jax.block_until_ready(rollout.tokens)
        with timer("reward"):
            scored = phases.score(parts, prompts, rollout, g)
            adv = phases.advantages(hosts.to_global(scored.rewards, parts.mesh),
                                    estimator=c.advantage.estimator, group_size=g,
                                    eps=c.advantage.std_eps)
        batch = shard_batch(train_batch(rollout, adv), parts.mesh)
        with timer("logprob"):
            recompute = c.loss_name in TROLL_LOSSES and c.loss.troll_old_source == "recompute"
            batch = phases.train_batch_with_logprobs(
                parts, batch, ref_params=ref_params, spec=self.spec,
                old_params=run.state.params if recompute else None,
            )
            jax.block_until_ready(batch)
        with timer("update"):
            if run.step_fn is None:
                run.step_fn = self._make_step(run.state, batch)
            with jax.set_mesh(parts.mesh):
                run.state, step_metrics = run.step_fn(run.state, batch)
            step_metrics = jax.device_get(step_metrics)
        metrics = {k: float(v) for k, v in step_metrics.items()}
        metrics.update(phases.reward_stats(phases.gathered(scored),
                                           hosts.gather_rows(hosts.local_rows(adv, parts.mesh)),
                                           g))
        metrics.update(phases.rollout_stats(parts, rollout, c.rollout.max_new_tokens))
        generated = metrics["response/tokens"]
        trained = generated * self.updates.epochs
        seconds = timer.seconds
        metrics.update({f"time/{k}": v for k, v in seconds.items()})
        metrics["time/step"] = sum(seconds.values())
        metrics["tokens_per_s/rollout"] = generated / max(seconds["rollout"], 1e-9)
        metrics["tokens_per_s/update"] = trained / max(seconds["update"], 1e-9)
        metrics["tokens_per_s/step"] = generated / max(metrics["time/step"], 1e-9)
        return metrics

    def sft_iteration(self, run: RunState, labelled: Any, step: int,
                      ref_params: nnx.State | None) -> dict[str, float]:
        """One supervised update on a batch of labelled problems (train.algorithm="sft");
        -> its metrics: sft/loss (token NLL), grad_norm, lr, seconds."""
        timer = PhaseTimer()
        with timer("update"):
            batch = device_sft_batch(labelled, self.parts.mesh)
            if run.step_fn is None:
                run.step_fn = make_sft_train_step(
                    graphdef=self.parts.graphdef, tx=self.tx, schedule=self.schedule,
                    mesh=self.parts.mesh, state_shardings=self.state_shardings,
                    batch_example=batch, chunk_size=self.config.train.logprob_chunk_size)
            with jax.set_mesh(self.parts.mesh):
                run.state, step_metrics = run.step_fn(run.state, batch)
            step_metrics = jax.device_get(step_metrics)
        metrics = {"sft/loss": float(step_metrics["loss"]),
                   "grad_norm": float(step_metrics["grad_norm"]), "lr": float(step_metrics["lr"]),
                   "time/update": timer.seconds["update"]}
        metrics["time/step"] = metrics["time/update"]
        metrics["tokens_per_s/update"] = float(step_metrics["tokens"]) / max(
            metrics["time/update"], 1e-9)
        return metrics

    def _make_step(self, state: TrainState, batch) -> Callable:
        """The jitted RL step for this run's shapes (built at the first batch)."""
        c = self.config
        return make_rl_train_step(
            graphdef=self.parts.graphdef, tx=self.tx, schedule=self.schedule,
            loss_name=c.loss_name, loss_cfg=c.loss, logprob_spec=self.spec,
            vocab_size=self.parts.model_config.vocab_size, updates=self.updates,
            mesh=self.parts.mesh, state_shardings=self.state_shardings, batch_example=batch,
        )

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Warm-up, `train.steps` RL iterations with periodic evaluation and checkpoints,
        summary and plots; resumes from the run directory's latest checkpoint if it has one."""
        c = self.config
        start = time.perf_counter()
        check_run_dir(c)
        if jax.process_index() == 0:
            save_config(c, self.run_dir)
        params, warm = self.warm_up()
        warm_seconds = time.perf_counter() - start
        sft = c.train.algorithm == "sft"
        if sft:  # continues the warm-up: its optimizer settings, a fresh Adam state
            self.tx, self.schedule = sft_optimizer(c.sft, c.train.steps)
        else:
            self.tx, self.schedule = make_optimizer(c.optimizer,
                                                    c.train.steps * self.updates.updates)
        state, self.state_shardings = create_state(params, self.tx, self.state_key,
                                                   self.parts.mesh)
        ref_params = params if c.loss.kl_coef else None
        run = RunState(state=state)
        prompts = labelled_batches(self.warmup_parts, c) if sft else PromptIterator(
            self.parts.train_source, self.parts.formatter, c.data.prompts_per_step, seed=c.seed)
        checkpointer = Checkpointer(self.run_dir, keep=c.train.keep_checkpoints)
        first_step = self._restore(run, checkpointer, prompts)
        writer = MetricsWriter(
            self.run_dir, tensorboard=c.logging.tensorboard,
            wandb_project=c.logging.wandb_project if c.logging.wandb else None,
            wandb_mode=c.logging.wandb_mode, config=c.to_dict(),
            purge_step=first_step + 1 if first_step else None,
        )
        eval_prompts = phases.eval_batch(self.parts, c.train.eval_examples)
        if not first_step:
            self._record_eval(run, writer, eval_prompts, 0)
        try:
            with _stop_signals() as stop:
                self._loop(run, prompts, eval_prompts, writer, checkpointer, ref_params,
                           first_step, stop)
        finally:
            # Also on an exception (e.g. a reward function failing): pending saves complete,
            # so the last checkpoint is there for the rerun.
            checkpointer.close()
        summary = self._summary(run, warm, warm_seconds, time.perf_counter() - start)
        summary["resumed_from_step"] = first_step
        summary["interrupted"] = stop.signal
        writer.close()
        if stop.signal is None:
            write_summary(self.run_dir, summary)
            summary["plots"] = plot_run(self.run_dir) if jax.process_index() == 0 else []
        self.state, self.step_fn = run.state, run.step_fn
        return summary

    def _loop(self, run: RunState, prompts: PromptIterator, eval_prompts: RLBatch,
              writer: MetricsWriter, checkpointer: Checkpointer, ref_params: nnx.State | None,
              first_step: int, stop: _StopFlag) -> None:
        """RL iterations first_step + 1 .. train.steps; stops early on SIGTERM / SIGINT (after
        saving) or after train.max_bad_steps consecutive steps with skipped updates."""
        c = self.config.train
        from tqdm.auto import tqdm

        sft = c.algorithm == "sft"
        iteration = self.sft_iteration if sft else self.iteration
        bar = tqdm(range(first_step + 1, c.steps + 1),
                   desc="SFT (continued)" if sft else f"RL ({self.config.loss_name})",
                   disable=not (self.progress and hosts.is_main()), initial=first_step,
                   total=c.steps)
        bad_steps = 0
        for step in bar:
            metrics = iteration(run, next(prompts), step, ref_params)
            # A signal reaches one process; all of them stop at the same step.
            if hosts.any_process(stop.signal is not None) and stop.signal is None:
                stop.signal = "stop signal on another process"
            if step % c.eval_every == 0 or step == c.steps:
                metrics.update(self._record_eval(run, writer, eval_prompts, step))
            run.history.append(metrics)
            writer.write(step, metrics)
            bar.set_postfix(self._postfix(metrics, run), refresh=False)
            bad_steps = bad_steps + 1 if metrics.get("skipped_updates") else 0
            if bad_steps:
                logger.warning("step %d: %d update(s) skipped (non-finite loss or gradient)",
                               step, int(metrics["skipped_updates"]))
            failed = bad_steps >= c.max_bad_steps
            if step % c.checkpoint_every == 0 or step == c.steps or stop.signal or failed:
                checkpointer.save(step, run.state, {"step": step, "iterator": prompts.state()})
            if failed:
                raise RuntimeError(
                    f"stopped at step {step}: {bad_steps} consecutive steps had a non-finite loss "
                    f"or gradient (their updates were skipped; train.max_bad_steps="
                    f"{c.max_bad_steps}). The last good state is checkpointed in "
                    f"{checkpointer.directory}; lower optimizer.lr or check the rewards, then "
                    "rerun the same command to resume"
                )
            if stop.signal:
                checkpointer.wait()
                print(f"\n{stop.signal} received: saved a checkpoint at step {step} in "
                      f"{checkpointer.directory}. Resume with the same command.", flush=True)
                break
        bar.close()

    def _restore(self, run: RunState, checkpointer: Checkpointer,
                 prompts: PromptIterator) -> int:
        """Restores the latest checkpoint into `run` and `prompts` (metrics files cut back to
        its step); returns that step, 0 when the run starts from scratch."""
        restored = checkpointer.restore_latest(run.state, self.state_shardings)
        if restored is None:
            truncate_rows(self.run_dir, -1)
            return 0
        step, run.state, meta = restored
        prompts.restore(meta["iterator"])
        rows = truncate_rows(self.run_dir, step)
        run.history = [r for r in rows if r["step"] >= 1]
        run.evals = [(r["step"], {k: v for k, v in r.items() if k.startswith("eval/")})
                     for r in rows if r.get("eval/accuracy") is not None]
        logger.warning("resuming from the checkpoint at step %d in %s", step,
                       checkpointer.directory)
        return step

    def _record_eval(self, run: RunState, writer: MetricsWriter, eval_prompts: RLBatch,
                     step: int) -> dict[str, float]:
        metrics, rows = self.evaluate(run.state.params, eval_prompts, step)
        run.evals.append((step, metrics))
        writer.write_samples(step, rows)
        if step == 0:
            writer.write(0, metrics)
        return metrics

    def _postfix(self, metrics: dict[str, float], run: RunState) -> dict[str, str]:
        eval_acc = f"{run.evals[-1][1]['eval/accuracy']:.3f}"
        if "sft/loss" in metrics:
            return {"loss": f"{metrics['sft/loss']:.3f}", "eval": eval_acc,
                    "s/step": f"{metrics['time/step']:.2f}"}
        kl = metrics.get("approx_kl", 0.0)
        return {"reward": f"{metrics['reward/mean']:.3f}", "acc": f"{metrics['accuracy']:.3f}",
                "eval": eval_acc, "kl": f"{kl:.1e}", "s/step": f"{metrics['time/step']:.2f}"}

    def _summary(self, run: RunState, warm: dict[str, Any], warm_seconds: float,
                 seconds: float) -> dict[str, Any]:
        """Final and best eval figures, first/last rewards, trust-region stats, totals."""
        accs = [(s, m["eval/accuracy"]) for s, m in run.evals]
        after = [a for s, a in accs if s > 0][-3:]
        history = run.history

        def mean_of(key: str, rows: list[dict[str, float]]) -> float | None:
            values = [r[key] for r in rows if key in r]
            return float(np.mean(values)) if values else None

        region_key = "troll_projected_frac" if self.config.loss_name in TROLL_LOSSES else \
            "clip_frac"
        best_step, best = max(accs, key=lambda x: x[1])
        sft = self.config.train.algorithm == "sft"
        summary = {
            "algorithm": self.config.train.algorithm,
            "loss_name": "sft" if sft else self.config.loss_name,
            "seed": self.config.seed,
            "steps": len(history),
            "eval_problems": int(run.evals[0][1]["eval/num_problems"]),
            "accuracy_warm_start": accs[0][1],
            "accuracy_final": accs[-1][1],
            "accuracy_last3_mean": float(np.mean(after)) if after else accs[0][1],
            "accuracy_best": best,
            "accuracy_best_step": best_step,
            "eval_history": [{"step": s, **m} for s, m in run.evals],
            "reward_first10": mean_of("reward/mean", history[:10]),
            "reward_last10": mean_of("reward/mean", history[-10:]),
            "kl_behaviour_mean": mean_of("approx_kl", history),
            "trust_region_key": region_key,
            "trust_region_frac_mean": mean_of(region_key, history),
            "mismatch_abs_log_ratio_max": max(
                (r["mismatch/abs_log_ratio_max"] for r in history
                 if "mismatch/abs_log_ratio_max" in r), default=None),
            "seconds_total": seconds,
            "seconds_warmup": warm_seconds,
            "seconds_per_step": mean_of("time/step", history),
            "generated_tokens": float(sum(r.get("response/length_mean", 0.0) for r in history)
                                      * self.config.data.prompts_per_step
                                      * self.config.rollout.num_samples),
            "optimizer_updates": len(history) * (1 if sft else self.updates.updates),
            "warmup": warm,
        }
        if self.config.train.eval_pass_k:
            key = f"eval/pass@{self.config.train.eval_pass_k}"
            summary["pass_k_final"] = run.evals[-1][1][key]
        return summary


def run(config: ml_collections.ConfigDict, *, progress: bool | None = None) -> dict[str, Any]:
    """Builds the run of `config` and runs it; returns the summary (also in summary.json)."""
    return Trainer(config, progress=progress).run()


def format_summary(summary: dict[str, Any], run_dir: str) -> str:
    """The end-of-run table printed by the CLI."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x: float | None, fmt: str = ".3f") -> str:
        return "-" if x is None else format(x, fmt)

    n = summary["eval_problems"]
    rl_seconds = summary["seconds_total"] - summary["seconds_warmup"]
    walls = f"{summary['seconds_warmup']:.0f} + {rl_seconds:.0f}"
    stage = "SFT" if summary.get("algorithm") == "sft" else "RL"
    lines = [
        f"| {'metric':52s} | {'value':>12s} |",
        f"|{'-' * 54}|{'-' * 14}|",
        f"| {'greedy test accuracy after warm-up (' + str(n) + ' problems)':52s} | "
        f"{pct(summary['accuracy_warm_start']):>12s} |",
        f"| {'greedy test accuracy after ' + stage + ' (mean last 3)':52s} | "
        f"{pct(summary['accuracy_last3_mean']):>12s} |",
        f"| {'greedy test accuracy, final evaluation':52s} | "
        f"{pct(summary['accuracy_final']):>12s} |",
        f"| {'reward, first 10 steps':52s} | {num(summary['reward_first10']):>12s} |",
        f"| {'reward, last 10 steps':52s} | {num(summary['reward_last10']):>12s} |",
        f"| {'KL(behaviour || policy), mean per token':52s} | "
        f"{num(summary['kl_behaviour_mean'], '.2e'):>12s} |",
        f"| {summary['trust_region_key'] + ', mean':52s} | "
        f"{pct(summary['trust_region_frac_mean']):>12s} |",
        f"| {'wall time: warm-up + ' + stage + ' (s)':52s} | {walls:>12s} |",
    ]
    gain = summary["accuracy_last3_mean"] - summary["accuracy_warm_start"]
    lines.append(f"\n{stage} changed greedy test accuracy by {100 * gain:+.1f} points "
                 f"({summary['loss_name']}, seed {summary['seed']}, {summary['steps']} steps).")
    lines.append(f"Run directory: {run_dir}  (metrics.jsonl, summary.json, samples.jsonl)")
    if summary.get("plots"):
        lines.append(f"Plots: {', '.join(summary['plots'])}")
    return "\n".join(lines)
