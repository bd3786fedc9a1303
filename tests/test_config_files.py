"""Config files, dotted overrides, locking, and the JSON round trip into run directories."""

import math
import os

import pytest

from trlx_jax.cli import config as config_cli
from trlx_jax.config import ConfigError, flat_keys, load_config, load_saved_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


def test_every_config_file_loads_and_is_locked():
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        if name.endswith(".py"):
            config = load_config(os.path.join(ROOT, "configs", name))
            assert config.is_locked, name
            with pytest.raises(AttributeError):
                config.not_a_key = 1


def test_overrides_apply_with_types():
    config = load_config(
        DEFAULT,
        ["--config.loss.eps_high=0.28", "loss.delta_low=0.1", "--config.mesh.shape=(2,2,2)",
         "--config.loss_name=dppo_binary_tv", "--config.train.steps=7"],
    )
    assert config.loss.eps_high == pytest.approx(0.28)
    assert config.loss.delta_low == pytest.approx(0.1)
    assert tuple(config.mesh.shape) == (2, 2, 2)
    assert config.loss_name == "dppo_binary_tv"
    assert config.train.steps == 7 and isinstance(config.train.steps, int)


def test_unknown_key_names_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer\.lrr'.*optimizer\.lr"):
        load_config(DEFAULT, ["--config.optimizer.lrr=3e-4"])
    with pytest.raises(ConfigError, match=r"'lr'.*optimizer\.lr"):
        load_config(DEFAULT, ["lr=3e-4"])


def test_bad_value_and_missing_value_and_missing_file():
    with pytest.raises(ConfigError, match="could not convert"):
        load_config(DEFAULT, ["--config.optimizer.lr=fast"])
    with pytest.raises(ConfigError, match="has no value"):
        load_config(DEFAULT, ["--config.optimizer.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/no_such_config.py")


def test_json_round_trip_keeps_inf_and_none(tmp_path):
    config = load_config(DEFAULT, ["--config.loss.eps_low=0.1"])
    path = save_config(config, str(tmp_path / "run"))
    assert os.path.basename(path) == "config.json"
    back = load_saved_config(str(tmp_path / "run"))
    assert sorted(flat_keys(back)) == sorted(flat_keys(config))
    assert math.isinf(back.loss.is_cap)
    assert back.loss.delta_low is None
    assert back.loss.eps_low == pytest.approx(0.1)
    assert back.is_locked


def test_cli_prints_and_rejects(tmp_path, capsys):
    assert config_cli.main(["--config", DEFAULT, "--config.train.steps=3",
                            "--save_to", str(tmp_path)]) == 0
    assert '"steps": 3' in capsys.readouterr().out
    assert (tmp_path / "config.json").exists()
    assert config_cli.main(["--config", DEFAULT, "--config.train.stepz=3"]) == 2
    assert "train.steps" in capsys.readouterr().err
