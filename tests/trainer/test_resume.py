"""Checkpoints and exact resume: crashes, SIGKILL at three moments, SIGTERM, corrupted
checkpoints, a directory of another config, non-finite steps."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trainer_testing import ROOT, run_config

from trlx_jax.config import ConfigError
from trlx_jax.trainer import phases
from trlx_jax.trainer.checkpoint import Checkpointer
from trlx_jax.trainer.loop import Trainer
from trlx_jax.trainer.metrics import read_metrics

# Wall-clock figures differ between any two runs; everything else must match exactly.
TIMING = ("time/", "tokens_per_s/")
RESUME = {"train.steps": 4, "train.checkpoint_every": 2, "train.eval_every": 2}


def comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def resume_config(tmp_path, name, **changes):
    """A 4-step run sharing one warm-up cache (tmp_path/sft_cache) with its siblings."""
    return run_config(tmp_path, "troll", **{**RESUME, "run_dir": str(tmp_path / name),
                                            "sft.cache_dir": str(tmp_path / "sft_cache"),
                                            **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-step run: (its tmp dir, metrics rows)."""
    tmp = tmp_path_factory.mktemp("resume")
    config = resume_config(tmp, "reference")
    Trainer(config).run()
    return tmp, read_metrics(config.run_dir)


def test_crash_mid_run_resumes_to_the_same_metrics(reference, monkeypatch):
    tmp, expected = reference
    config = resume_config(tmp, "crash")
    original = phases.score

    def failing_reward(parts, batch, rollout, g, calls=[0]):  # noqa: B006 - a call counter
        calls[0] += g > 1  # rollouts only, not evaluations
        if calls[0] == 3:
            raise RuntimeError("reward server down")
        return original(parts, batch, rollout, g)

    monkeypatch.setattr(phases, "score", failing_reward)
    with pytest.raises(RuntimeError, match="reward server down"):
        Trainer(config).run()
    assert Checkpointer(config.run_dir, keep=2).steps() == [2]
    assert [r["step"] for r in read_metrics(config.run_dir)] == [0, 1, 2]
    monkeypatch.setattr(phases, "score", original)
    summary = Trainer(config).run()
    assert summary["resumed_from_step"] == 2
    assert comparable(read_metrics(config.run_dir)) == comparable(expected)


KILLER = textwrap.dedent("""
    import os, signal, sys, time
    from trlx_jax.cli import train
    from trlx_jax.trainer import checkpoint, loop, phases
    moment, at = sys.argv[1], int(sys.argv[2])
    state = {"step": 0}

    run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--config.run_dir="))
    first_checkpoint = os.path.join(run_dir, "checkpoints", "2")

    def die():
        # "After its first checkpoint": the async save of step 2 is complete on disk (orbax
        # renames its temporary directory to "2" when it is).
        while not os.path.isdir(first_checkpoint):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "rollout":
        original = phases.sample
        def sample(*args, **kwargs):
            if kwargs["num_samples"] > 1:  # the rollout, not an evaluation
                state["step"] += 1
                if state["step"] == at:
                    die()
            return original(*args, **kwargs)
        phases.sample = sample
    elif moment == "update":
        original = loop.Trainer._make_step
        def make_step(self, *args):
            step = original(self, *args)
            def killing(*a):
                state["step"] += 1
                out = step(*a)
                if state["step"] == at:
                    die()
                return out
            killing._cache_size = step._cache_size
            return killing
        loop.Trainer._make_step = make_step
    elif moment == "save":
        original = checkpoint.Checkpointer.save
        def save(self, step, *args):
            original(self, step, *args)
            if step == at:
                die()  # the async save of `at` is in flight
        checkpoint.Checkpointer.save = save
    sys.exit(train.main(sys.argv[3:]))
""")


def cli_args(config):
    keys = ["run_dir", "data.data_dir", "data.task_options", "data.prompts_per_step",
            "rollout.num_samples", "rollout.record_top_k", "loss.troll_k", "model.hidden_size",
            "model.intermediate_size", "model.head_dim", "train.steps", "train.minibatches",
            "train.eval_every", "train.eval_examples", "train.checkpoint_every", "sft.steps",
            "sft.batch_size", "sft.num_examples", "sft.cache_dir", "logging.progress",
            "mesh.shape"]
    args = [f"--config={os.path.join(ROOT, 'configs', 'default.py')}"]
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        args.append(f"--config.{key}={node}")
    return args


def run_cli(extra, config, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-c", KILLER, *extra, *cli_args(config)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, **kwargs)


# Each case is two subprocess runs; the async save in flight is the delicate one, so it stays
# in the default suite and the other two moments run in CI's slow step.
@pytest.mark.parametrize("moment,at", [
    pytest.param("rollout", 4, marks=pytest.mark.slow),
    pytest.param("update", 3, marks=pytest.mark.slow),
    ("save", 4),
])
def test_sigkill_then_the_same_command_equals_an_uninterrupted_run(reference, moment, at):
    tmp, expected = reference
    config = resume_config(tmp, f"kill_{moment}")
    killed = run_cli([moment, str(at)], config)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    steps = Checkpointer(config.run_dir, keep=2).steps()
    # The kill came after the first checkpoint; a save cut short is never listed (one that the
    # kill raced to its end is complete and fine to resume from).
    assert steps == [2] or (moment == "save" and steps == [2, 4]), steps
    resumed = run_cli(["none", "0"], config)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_metrics(config.run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # killed rows replaced, not duplicated
    assert comparable(rows) == comparable(expected)


def test_sigterm_saves_and_exits_cleanly_then_resumes(reference):
    """SIGTERM mid-run: checkpoint at the current step, exit 0, resume later."""
    tmp, expected = reference
    config = resume_config(tmp, "sigterm", **{"train.steps": 400, "train.checkpoint_every": 400,
                                              "train.eval_every": 400})
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "trlx_jax.cli.train", *cli_args(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = os.path.join(config.run_dir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and not (
            os.path.isfile(metrics) and sum(1 for _ in open(metrics)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM received: saved a checkpoint at step" in out
    assert "Resume with the same command" in out
    step = Checkpointer(config.run_dir, keep=2).steps()[-1]
    assert 2 <= step < 400
    assert read_metrics(config.run_dir)[-1]["step"] == step
    assert not os.path.isfile(os.path.join(config.run_dir, "summary.json"))
    shorter = resume_config(tmp, "sigterm", **{"train.steps": step + 1,
                                               "train.checkpoint_every": 400,
                                               "train.eval_every": 400,
                                               "train.allow_config_change": True})
    summary = Trainer(shorter).run()
    assert summary["resumed_from_step"] == step
    assert [r["step"] for r in read_metrics(config.run_dir)] == list(range(step + 2))


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous(reference, caplog):
    tmp, _ = reference
    run_dir = str(tmp / "reference")
    copy = str(tmp / "corrupted")
    shutil.copytree(run_dir, copy)
    files = [f for f in glob.glob(os.path.join(copy, "checkpoints", "4", "state", "**", "*"),
                                  recursive=True) if os.path.isfile(f)]
    for f in files:
        os.remove(f)
    trainer = Trainer(resume_config(tmp, "corrupted"))
    state, shardings = _fresh_state(trainer)
    step, _, meta = Checkpointer(copy, keep=2).restore_latest(state, shardings)
    assert step == 2 and meta["step"] == 2
    assert "checkpoint 4" in caplog.text and "unreadable" in caplog.text


def _fresh_state(trainer):
    from trlx_jax.trainer.state import create_state, make_optimizer

    tx, _ = make_optimizer(trainer.config.optimizer, 10)
    return create_state(trainer.parts.params, tx, jax.random.key(0), trainer.parts.mesh)


def test_a_directory_belongs_to_one_config(reference):
    tmp, _ = reference
    changed = resume_config(tmp, "reference", **{"optimizer.lr": 1e-3})
    with pytest.raises(ConfigError, match=r"optimizer\.lr: 0\.0002 -> 0\.001.*run_dir"):
        Trainer(changed).run()
    longer = resume_config(tmp, "reference", **{"train.steps": 6})
    with pytest.raises(ConfigError, match=r"train\.steps: 4 -> 6.*allow_config_change=true"):
        Trainer(longer).run()
    allowed = resume_config(tmp, "reference", **{"train.steps": 6,
                                                 "train.allow_config_change": True})
    summary = Trainer(allowed).run()
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 6


def test_non_finite_updates_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    config = run_config(tmp_path, "clip", **{"train.steps": 5, "train.max_bad_steps": 2})
    monkeypatch.setattr(phases, "advantages",
                        lambda rewards, **kw: jnp.full(rewards.shape, jnp.nan))
    trainer = Trainer(config)
    with pytest.raises(RuntimeError, match="2 consecutive steps had a non-finite loss"):
        trainer.run()
    rows = read_metrics(config.run_dir)
    assert [r["skipped_updates"] for r in rows[1:]] == [2.0, 2.0]
    step, state, _ = Checkpointer(config.run_dir, keep=2).restore_latest(*_fresh_state(trainer))
    assert step == 2 and int(state.step) == 0  # no update was applied
    warm, _ = trainer.warm_up()
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(warm), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_of_another_model_shape_is_refused(reference):
    tmp, _ = reference
    other = Trainer(resume_config(tmp, "other_shape", **{"model.hidden_size": 16,
                                                          "model.intermediate_size": 32}))
    with pytest.raises(ValueError, match="another shape than this config's model"):
        Checkpointer(str(tmp / "reference"), keep=2).restore_latest(*_fresh_state(other))
