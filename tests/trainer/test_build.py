"""Config checks before anything compiles: one K, temperatures, mesh, batch splits, names."""

import dataclasses

import pytest
from trainer_testing import run_config

from trlx_jax.config import ConfigError
from trlx_jax.rollout import SamplingParams
from trlx_jax.trainer.batch import LogProbSpec
from trlx_jax.trainer.build import (
    check_config,
    logprob_spec,
    parse_options,
    resolve_mesh_shape,
    update_schedule,
)
from trlx_jax.trainer.phases import check_rollout


def test_troll_refuses_two_ks_naming_all_three_values(tmp_path):
    config = run_config(tmp_path, **{"rollout.record_top_k": 8, "loss.troll_k": 64})
    with pytest.raises(ConfigError, match=r"record_top_k=8.*top-K.*64.*loss\.troll_k=64"):
        check_config(config)


def test_one_k_drives_the_current_policy_top_k(tmp_path):
    spec = logprob_spec(run_config(tmp_path))
    assert spec == LogProbSpec(temperature=1.0, top_k=8, gather_old_topk=False, chunk_size=1024)
    union = logprob_spec(run_config(tmp_path, **{"loss.troll_new_logp_on_union": True}))
    assert union.gather_old_topk
    topk = logprob_spec(run_config(tmp_path, "dppo_topk_kl"))
    assert topk.top_k == 0 and topk.gather_old_topk
    clip = logprob_spec(run_config(tmp_path, "clip", **{"rollout.temperature": 0.7}))
    assert clip.top_k == 0 and not clip.gather_old_topk and clip.temperature == 0.7


def test_topk_losses_need_a_record(tmp_path):
    with pytest.raises(ConfigError, match="record_top_k >= 1"):
        check_config(run_config(tmp_path, "dppo_topk_tv", **{"rollout.record_top_k": 0}))


def test_recompute_is_a_troll_option(tmp_path):
    with pytest.raises(ConfigError, match="troll_old_source"):
        check_config(run_config(tmp_path, "clip", **{"loss.troll_old_source": "recompute"}))
    check_config(run_config(tmp_path, "troll", **{"loss.troll_old_source": "recompute"}))


def test_rollout_temperature_and_k_must_match_the_trainer(rollout_batch):
    rollout, _ = rollout_batch
    spec = LogProbSpec(temperature=1.0, top_k=8)
    check_rollout(rollout, spec, needs_record=True)
    with pytest.raises(ValueError, match="temperature 0.5.*at 1.0"):
        check_rollout(rollout._replace(sampling=SamplingParams(0.5, record_top_k=8)), spec, True)
    with pytest.raises(ValueError, match="top-4.*top-K is 8"):
        check_rollout(rollout._replace(sampling=SamplingParams(1.0, record_top_k=4)), spec, True)
    with pytest.raises(ValueError, match="record_top_k >= 1"):
        check_rollout(rollout._replace(topk_ids=None), dataclasses.replace(spec, top_k=0), True)


def test_mesh_shape_resolution():
    assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    assert resolve_mesh_shape((1, 1, 1), 8) == (1, 1, 1)
    for bad in [(-1, -1, 1), (0, 1, 1), (1, 1), (16, 1, 1)]:
        with pytest.raises(ConfigError, match="mesh.shape"):
            resolve_mesh_shape(bad, 8)
    with pytest.raises(ConfigError, match="do not divide"):
        resolve_mesh_shape((-1, 3, 1), 8)


def test_batch_split_must_divide_the_rollout(tmp_path):
    assert update_schedule(run_config(tmp_path)).updates == 2
    with pytest.raises(ConfigError, match="16 rows.*minibatches=3"):
        update_schedule(run_config(tmp_path, **{"train.minibatches": 3}))
    with pytest.raises(ConfigError, match="epochs_per_batch must be >= 1"):
        update_schedule(run_config(tmp_path, **{"train.epochs_per_batch": 0}))


def test_registry_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="loss_name.*Valid names"):
        check_config(run_config(tmp_path, "trol"))
    with pytest.raises(ConfigError, match="advantage.estimator"):
        check_config(run_config(tmp_path, **{"advantage.estimator": "ppo"}))
    with pytest.raises(ConfigError, match="data.task"):
        check_config(run_config(tmp_path, **{"data.task": "arith"}))


def test_task_options_parse():
    assert parse_options("digits=3, operators=+-,num_train=200", "k") == {
        "digits": 3, "operators": "+-", "num_train": 200}
    assert parse_options("", "k") == {}
    with pytest.raises(ConfigError, match="name=value"):
        parse_options("digits", "data.task_options")
