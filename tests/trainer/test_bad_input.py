"""Bad input to a run: a clear error naming the problem and the fix, before anything compiles."""

import json
import os

import pytest
from trainer_testing import ROOT, run_config

from trlx_jax.config import ConfigError, load_config
from trlx_jax.data import RewardError
from trlx_jax.data.prompts import PromptTooLongError
from trlx_jax.trainer import phases
from trlx_jax.trainer.loop import Trainer
from trlx_jax.trainer.metrics import read_metrics

DEFAULT = os.path.join(ROOT, "configs", "default.py")


def test_unknown_config_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.stepz'.*train\.steps"):
        load_config(DEFAULT, ["train.stepz=3"])


@pytest.mark.parametrize("changes,message", [
    ({"loss_name": "trol"}, r"loss_name.*Valid names"),
    ({"advantage.estimator": "gae"}, r"advantage.estimator.*Valid names"),
    ({"data.task": "gsm9k"}, r"data.task.*Valid names"),
    ({"data.rewards": "exact:1"}, r"data.rewards.*Valid names"),
    ({"mesh.shape": (16, 1, 1)}, r"mesh.shape=\(16, 1, 1\) needs 16 devices, 8 available"),
    ({"rollout.record_top_k": 104, "loss.troll_k": 104}, r"record_top_k=104 must be below"),
    ({"loss.troll_k": 16}, r"record_top_k=8.*loss\.troll_k=16"),
    ({"loss.troll_eps": 0.0}, r"loss.troll_eps=0.0 is out of range: it must be > 0"),
    ({"loss_name": "dppo_binary_tv", "loss.delta_low": -0.1}, r"loss.delta_low=-0.1.*> 0"),
    ({"optimizer.lr": -1e-3}, r"optimizer.lr=-0.001 is out of range"),
    ({"model.path": "/nonexistent/model"}, r"model.path='/nonexistent/model' is not a directory"),
])
def test_bad_settings_are_refused_by_name(tmp_path, changes, message):
    config = run_config(tmp_path, **{"mesh.shape": (1, 1, 1), **changes})
    with pytest.raises(ConfigError, match=message):
        Trainer(config)


def test_model_directories_without_config_or_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        Trainer(run_config(tmp_path, **{"model.path": str(tmp_path / "empty")}))
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(ConfigError, match="no \\*.safetensors weights"):
        Trainer(run_config(tmp_path, **{"model.path": str(tmp_path / "no_weights")}))


def test_a_tokenizer_larger_than_the_model(tmp_path):
    from hf_testing import make_hf_model
    from transformers import Qwen3Config

    hf = Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    make_hf_model(hf).save_pretrained(tmp_path / "small_vocab")
    with pytest.raises(ConfigError, match="tokenizer has 104 tokens but the model's vocabulary "
                                          "has 50"):
        Trainer(run_config(tmp_path, **{"model.path": str(tmp_path / "small_vocab"),
                                        "data.tokenizer": _char_tokenizer(tmp_path)}))


def _char_tokenizer(tmp_path):
    from trlx_jax.data import build_char_tokenizer

    build_char_tokenizer(tmp_path / "tok")
    return str(tmp_path / "tok")


def test_a_dataset_smaller_than_one_batch(tmp_path):
    config = run_config(tmp_path, **{"data.task_options": "num_train=3,num_test=40",
                                     "sft.steps": 0})
    with pytest.raises(ValueError, match="3 examples are fewer than one global batch of 4; use a "
                                         "smaller batch"):
        Trainer(config).run()


def test_a_prompt_longer_than_the_limit(tmp_path):
    config = run_config(tmp_path, **{"data.max_prompt_len": 3})
    with pytest.raises(PromptTooLongError, match="exceed max_length=3.*on_too_long='drop'"):
        Trainer(config).run()


@pytest.mark.parametrize("bad,message", [
    (lambda outputs: 1 / 0, "raised ZeroDivisionError"),
    (lambda outputs: [1.0], r"returned shape \(1,\) for 16 samples"),
    (lambda outputs: [float("nan")] * len(outputs), "returned non-finite value nan"),
])
def test_a_failing_reward_function_keeps_what_was_done(tmp_path, monkeypatch, bad, message):
    """A reward failing at step 3 names the function and the sample; checkpoint 2 and the
    metrics up to it stay, and the same command resumes after the fix."""
    config = run_config(tmp_path, "clip", **{"train.steps": 3, "train.checkpoint_every": 2,
                                             "train.eval_every": 100})
    calls = []

    def reward(samples, prompts, outputs, **metadata):
        calls.append(1)
        return bad(outputs) if len(calls) == 4 else [0.0] * len(outputs)  # eval0, 1, 2, then 3

    from trlx_jax.data import combine_rewards

    original = phases.score

    def score(parts, batch, rollout, g):
        parts.reward = combine_rewards([(reward, 1.0)])
        parts.accuracy_reward = "reward"
        return original(parts, batch, rollout, g)

    monkeypatch.setattr(phases, "score", score)
    with pytest.raises(RewardError, match=f"reward function 'reward' {message}"):
        Trainer(config).run()
    assert [r["step"] for r in read_metrics(config.run_dir)] == [0, 1, 2]
    monkeypatch.setattr(phases, "score", original)
    assert Trainer(config).run()["resumed_from_step"] == 2


def test_non_finite_inputs_of_a_step_are_counted_and_their_updates_skipped(tiny_model):
    """A NaN behaviour log-prob or advantage never becomes a silent NaN loss: the step counts
    it (`nonfinite/*`), skips the updates whose minibatch holds it, and the params stay finite;
    the loop stops after train.max_bad_steps such steps (test_resume covers that part)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from trlx_jax.models import make_mesh
    from trlx_jax.objectives.config import get_default_config
    from trlx_jax.trainer.batch import LogProbSpec, PolicyRecord, TrainBatch
    from trlx_jax.trainer.state import create_state
    from trlx_jax.trainer.step import UpdateSchedule, make_rl_train_step

    graphdef, params, config = tiny_model
    rng = np.random.default_rng(0)
    n, p, t = 8, 4, 4
    response_mask = np.arange(t) < rng.integers(1, t + 1, size=(n, 1))
    batch = TrainBatch(
        tokens=jnp.asarray(rng.integers(0, config.vocab_size, (n, p + t)), jnp.int32),
        attention_mask=jnp.asarray(np.concatenate([np.ones((n, p), bool), response_mask], 1)),
        response_mask=jnp.asarray(response_mask),
        advantages=jnp.asarray(rng.standard_normal(n), jnp.float32),
        old=PolicyRecord(jnp.asarray(-rng.uniform(1, 5, (n, t)), jnp.float32)),
    )
    row = 0
    bad_logp = batch.old.logp.at[row, 0].set(np.nan)
    cases = {
        "nonfinite/old_logp": batch._replace(old=batch.old._replace(logp=bad_logp)),
        "nonfinite/advantages": batch._replace(advantages=batch.advantages.at[row].set(np.nan)),
    }
    mesh = make_mesh((1, 1, 1))
    tx = optax.sgd(1e-2)
    step = None
    for key, bad in cases.items():
        state, shardings = create_state(params, tx, jax.random.key(0), mesh)
        step = step or make_rl_train_step(
            graphdef=graphdef, tx=tx, schedule=optax.constant_schedule(1e-2), loss_name="clip",
            loss_cfg=get_default_config(), logprob_spec=LogProbSpec(1.0),
            vocab_size=config.vocab_size, updates=UpdateSchedule(1, 2, 1), mesh=mesh,
            state_shardings=shardings, batch_example=bad)
        with jax.set_mesh(mesh):
            state, metrics = step(state, bad)
        metrics = jax.device_get(metrics)
        assert metrics[key] == 1, key
        assert metrics["skipped_updates"] == 1, key  # the other minibatch still updates
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
        assert int(state.step) == 1
