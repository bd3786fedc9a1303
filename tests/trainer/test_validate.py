"""The run config validated in one place: every key against its domain, registries, cross-key
rules; each message names the key, the value and what is allowed."""

import copy

import pytest
from trainer_testing import run_config

from trlx_jax.checks import Choice, Domain
from trlx_jax.config import ConfigError
from trlx_jax.trainer.validate import DOMAINS, validate_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The tiny run config (clip: the TROLL one-K rule stays out of the way)."""
    return run_config(tmp_path_factory.mktemp("validate"), "clip")


def changed(config, **changes):
    """A copy of `config` with dotted keys (`__` for the dots) set."""
    c = copy.deepcopy(config)
    for dotted, value in changes.items():
        *path, leaf = dotted.split("__")
        node = c
        for part in path:
            node = node[part]
        node[leaf] = value
    return c


def outside(domain: Domain | Choice):
    """A value just outside `domain` (None when no value of the key's type is)."""
    if isinstance(domain, Choice):
        return "not-a-" + domain.names[0]
    if domain.low is not None:
        return type(domain.low)(domain.low) - (0 if domain.low_open else 1) if domain.integer \
            else float(domain.low) - (0.0 if domain.low_open else 0.5)
    if domain.high is not None:
        return float(domain.high) + 0.5
    return float("inf") if domain.finite else None


def test_the_tiny_config_and_the_default_mesh_pass(config):
    assert validate_config(config, device_count=1) == (1, 1, 1)
    # The default (-1, 1, 1) takes every device (it once failed inside jax with an IndexError).
    assert validate_config(changed(config, mesh__shape=(-1, 1, 1)), device_count=8) == (8, 1, 1)


@pytest.mark.parametrize("key", [k for k, d in DOMAINS.items() if outside(d) is not None])
def test_every_key_outside_its_domain_is_refused_by_name(config, key):
    bad = outside(DOMAINS[key])
    c = changed(config, **{key.replace(".", "__"): bad})
    with pytest.raises(ConfigError) as err:
        validate_config(c, device_count=1)
    message = str(err.value)
    assert message.startswith(f"{key}={bad!r}"), message
    assert f"it must be {DOMAINS[key]}" in message


@pytest.mark.parametrize("changes,message", [
    # The example: clip-higher with a negative eps_high used to clip every ratio to 0.5.
    ({"loss__eps_high": -0.5}, r"^loss.eps_high=-0.5 is out of range: it must be >= 0$"),
    ({"loss__troll_eps": float("nan")}, r"loss.troll_eps=nan .* > 0 and finite"),
    ({"loss__delta_high": 0.0}, r"loss.delta_high=0.0 .* > 0 \(or None: the paper value"),
    ({"rollout__top_p": 1.5}, r"rollout.top_p=1.5 .* in \(0, 1\] \(1 = off\)"),
    ({"rollout__temperature": float("inf")}, r"rollout.temperature=inf .* >= 0 and finite"),
    ({"loss__aggregation": "mean"}, r"loss.aggregation='mean' is not valid: it must be one of "
                                    r"token-mean, seq-mean-token-sum"),
    ({"optimizer__schedule": "linear"}, r"optimizer.schedule='linear'.*constant, cosine"),
    ({"data__rewards": "format:0.1,exactmatch"}, r"data.rewards=.*'exactmatch'.*Did you mean "
                                                 r"'exact_match'.*Valid names"),
    ({"data__rewards": "format:x"}, r"weight 'x' of 'format' is not a number"),
    ({"data__task_options": "digits"}, r"data.task_options='digits'.*name=value"),
    ({"model__num_heads": 4, "model__num_kv_heads": 3}, r"num_heads=4 must be a multiple of "
                                                        r"model.num_kv_heads=3"),
    ({"mesh__shape": (-1, -1, 1)}, r"mesh.shape=\(-1, -1, 1\) must be 3 sizes"),
    ({"mesh__shape": ("a", 1, 1)}, r"mesh.shape=.* must be 3 integer sizes"),
    ({"train__minibatches": 3}, r"16 rows .* train.minibatches=3"),
])
def test_bad_values_name_the_key_and_what_is_allowed(config, changes, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(changed(config, **changes), device_count=1)


def test_batches_must_split_over_the_data_parallel_devices(config):
    c = changed(config, data__prompts_per_step=3, rollout__num_samples=2, mesh__shape=(-1, 1, 1))
    with pytest.raises(ConfigError, match=r"6 rows \(data.prompts_per_step=3 x rollout."
                                          r"num_samples=2\).*8 data-parallel.*multiple of 8"):
        validate_config(c, device_count=8)
    c = changed(config, sft__batch_size=12, mesh__shape=(-1, 1, 1))
    with pytest.raises(ConfigError, match=r"sft.batch_size=12 .* multiple of 8"):
        validate_config(c, device_count=8)
    validate_config(changed(c, sft__steps=0), device_count=8)  # no warm-up: no SFT batches


def test_a_missing_key_is_named(config):
    c = copy.deepcopy(config)
    with c.unlocked():
        del c.train["max_bad_steps"]
    with pytest.raises(ConfigError, match=r"no key 'train.max_bad_steps'.*configs/default.py"):
        validate_config(c, device_count=1)
