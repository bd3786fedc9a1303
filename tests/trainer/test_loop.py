"""End to end: a few RL steps for every registered loss, files of the run directory, the CLI."""

import glob
import json
import os

import jax
import numpy as np
import pytest
from trainer_testing import ROOT, override_args, run_config, tiny_overrides

from trlx_jax.cli import train as train_cli
from trlx_jax.objectives import POLICY_LOSSES, policy_loss
from trlx_jax.trainer.loop import Trainer
from trlx_jax.trainer.metrics import read_metrics

policy_loss("clip")  # loads every registered loss
LOSSES = POLICY_LOSSES.names()
# The default suite runs the losses that take the distinct paths (no top-K record; the TROLL
# record with a KL reference; the recomputed behaviour policy; DPPO's gather at the record);
# the others run in the slow step.
DEFAULT_LOSSES = ("clip", "troll", "troll_gspo", "dppo_topk_kl")


@pytest.mark.parametrize("loss_name", [
    name if name in DEFAULT_LOSSES else pytest.param(name, marks=pytest.mark.slow)
    for name in LOSSES
])
def test_few_step_run_for_every_loss(tmp_path, loss_name):
    changes = {}
    if loss_name == "troll":  # the KL-to-reference term and a cosine schedule, once
        changes = {"loss.kl_coef": 0.05, "optimizer.schedule": "cosine"}
    if loss_name == "troll_gspo":  # the old policy recomputed before the update, once
        changes = {"loss.troll_old_source": "recompute"}
    config = run_config(tmp_path, loss_name, **changes)
    trainer = Trainer(config)
    start = jax.device_get(trainer.parts.params)
    summary = trainer.run()
    run_dir = config.run_dir

    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        for key in ("reward/mean", "reward/exact_match/mean", "accuracy", "advantage/std",
                    "loss", "grad_norm", "lr", "approx_kl", "entropy", "clip_frac",
                    "response/length_mean", "response/hit_length_limit_frac",
                    "mismatch/abs_log_ratio_mean", "time/rollout", "time/update",
                    "tokens_per_s/rollout", "eval/accuracy"):
            assert row.get(key) is not None, (loss_name, key)
        assert row["mismatch/abs_log_ratio_max"] < 1e-4
    if loss_name.startswith("troll"):
        assert "troll_projected_frac" in rows[1]
    if loss_name == "troll":
        assert rows[1]["kl_ref"] is not None
    end = jax.device_get(trainer.state.params)
    change = max(float(np.abs(a - b).max()) for a, b in
                 zip(jax.tree.leaves(start), jax.tree.leaves(end), strict=True))
    assert change > 0, "the updates did not change the parameters"
    assert trainer.step_fn._cache_size() == 1, "steps after the first recompiled"

    with open(os.path.join(run_dir, "summary.json")) as f:
        saved = json.load(f)
    assert saved["steps"] == 2 and saved["loss_name"] == loss_name
    assert saved["accuracy_warm_start"] == summary["accuracy_warm_start"]
    assert len(saved["eval_history"]) == 3
    samples = [json.loads(x) for x in open(os.path.join(run_dir, "samples.jsonl"))]
    assert {"prompt", "completion", "answer", "reward", "correct", "step"} <= set(samples[0])
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(run_dir, "config.json"))
    plots = {os.path.basename(p) for p in summary["plots"]}
    assert {"time.png", "response_length.png"} <= plots  # (all-zero curves are not drawn)
    assert all(os.path.getsize(p) > 1000 for p in summary["plots"])


def test_warmup_is_cached_across_runs_and_methods(tmp_path):
    first = Trainer(run_config(tmp_path, "clip", **{"train.steps": 1}))
    params, record = first.warm_up()
    assert not record["cached"] and record["steps"] == 3
    other = run_config(tmp_path, "dppo_binary_tv",
                       **{"train.steps": 1, "run_dir": str(tmp_path / "other")})
    again, record = Trainer(other).warm_up()
    assert record["cached"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = run_config(tmp_path, "clip", **{"sft.steps": 4})
    assert not Trainer(changed).warm_up()[1]["cached"]


def test_sft_algorithm_continues_the_warmup_with_evaluations(tmp_path):
    config = run_config(tmp_path, **{"train.algorithm": "sft", "train.steps": 3,
                                     "train.eval_every": 2})
    trainer = Trainer(config)
    summary = trainer.run()
    assert summary["algorithm"] == "sft" and summary["loss_name"] == "sft"
    assert summary["optimizer_updates"] == 3 and summary["reward_first10"] is None
    assert [e["step"] for e in summary["eval_history"]] == [0, 2, 3]
    rows = [r for r in read_metrics(config.run_dir) if r["step"] >= 1]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["sft/loss"] > 0 and r["time/step"] > 0 and r["grad_norm"] > 0 for r in rows)
    # It starts from the cached warm-up, and its updates move the weights.
    warm, record = trainer.warm_up()
    assert record["cached"]
    moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(warm), jax.tree.leaves(trainer.state.params), strict=True)]
    assert all(moved)
    assert os.path.isfile(os.path.join(config.run_dir, "plots", "sft_loss.png"))


def test_pass_at_k_evaluation(tmp_path):
    config = run_config(tmp_path, "clip", **{"train.steps": 1, "train.eval_pass_k": 4})
    summary = Trainer(config).run()
    assert 0.0 <= summary["pass_k_final"] <= 1.0
    assert summary["pass_k_final"] >= summary["accuracy_final"] - 0.25


def test_wandb_writer_offline(tmp_path):
    pytest.importorskip("wandb")
    config = run_config(tmp_path, "clip", **{"train.steps": 1, "logging.wandb": True,
                                             "logging.wandb_mode": "offline"})
    Trainer(config).run()
    assert glob.glob(os.path.join(config.run_dir, "wandb", "offline-run-*"))


def test_cli_runs_a_shortened_main_job(tmp_path, capsys):
    # The default mesh (-1, 1, 1): data parallel over the simulated devices.
    overrides = {k: v for k, v in tiny_overrides(tmp_path).items() if k != "mesh.shape"}
    argv = [f"--config={os.path.join(ROOT, 'configs', 'default.py')}",
            *(f"--config.{a}" for a in override_args(overrides))]
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "greedy test accuracy after warm-up (16 problems)" in out
    assert "RL changed greedy test accuracy by" in out
    assert "plots" in out.lower()


def test_cli_reports_a_bad_config(tmp_path, capsys):
    default = os.path.join(ROOT, "configs", "default.py")
    assert train_cli.main([f"--config={default}", "--config.loss.troll_k=4"]) == 2
    assert "record_top_k=64" in capsys.readouterr().err
