"""configs/compare_arithmetic.py and its sweep: every method and setting validates, starts from
the same warm-up, differs from the others only where it should; each runs a few steps (slow)."""

import importlib.util
import os

import pytest
from trainer_testing import ROOT, override_args, tiny_overrides

from trlx_jax.config import flat_keys, load_config
from trlx_jax.sweep.spec import expand, load_sweep
from trlx_jax.trainer.loop import Trainer
from trlx_jax.trainer.validate import validate_config
from trlx_jax.trainer.warmup import warmup_key

COMPARE = os.path.join(ROOT, "configs", "compare_arithmetic.py")
SWEEP = os.path.join(ROOT, "launch", "sweeps", "compare_arithmetic.py")
_spec = importlib.util.spec_from_file_location("compare_arithmetic", COMPARE)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)
SETTINGS = [s for s in compare.SETTINGS if s != "main"]
ARGS = [*compare.METHODS, "sft_continued",
        *(f"{m}-{s}" for s in SETTINGS for m in compare.METHODS)]


def _flat(config) -> dict:
    flat = {}
    for key in flat_keys(config):
        node = config
        for part in key.split("."):
            node = node[part]
        flat[key] = node
    return flat


def test_sweep_runs_every_comparison_for_three_seeds():
    jobs = expand(load_sweep(SWEEP))
    assert len(jobs) == len(ARGS) * 3
    assert sorted({j.config_file.rsplit(":", 1)[1] for j in jobs}) == sorted(ARGS)
    assert len({j.run_dir for j in jobs}) == len(jobs)
    assert {j.seed for j in jobs} == {0, 1, 2}


def test_methods_differ_only_in_their_loss_and_setting():
    reference = _flat(load_config(f"{COMPARE}:troll"))
    allowed = {"loss_name", "run_dir"}
    settings = {s: set(compare.SETTINGS[s]) for s in SETTINGS}
    sft = {"train.algorithm", "train.steps", "train.eval_every", "train.checkpoint_every"}
    keys = set()
    for arg in ARGS:
        config = load_config(f"{COMPARE}:{arg}")
        validate_config(config, device_count=1)
        assert warmup_key(config) == warmup_key(load_config(f"{COMPARE}:troll")), arg
        changed = {k for k, v in _flat(config).items() if v != reference[k]}
        setting = arg.partition("-")[2]
        extra = settings[setting] if setting else sft if arg == "sft_continued" else set()
        assert changed - allowed - extra <= {k for k in changed if k.startswith("loss.")}, arg
        keys |= changed
    assert set().union(*settings.values()) <= keys and "train.algorithm" in keys
    with pytest.raises(ValueError, match="valid: <method>"):
        load_config(f"{COMPARE}:ppo")
    with pytest.raises(ValueError, match="no stress setting"):
        load_config(f"{COMPARE}:sft_continued-stress")


@pytest.mark.slow
@pytest.mark.parametrize("arg", ARGS)
def test_each_comparison_runs_a_few_steps(tmp_path, arg):
    overrides = tiny_overrides(tmp_path)
    del overrides["train.minibatches"]  # each setting's own (4 or 16 of the 16 sequences)
    overrides.update({"train.steps": 2, "train.eval_every": 1, "train.checkpoint_every": 1})
    config = load_config(f"{COMPARE}:{arg}", override_args(overrides))
    summary = Trainer(config).run()
    assert summary["steps"] == 2 and len(summary["eval_history"]) == 3
    if arg == "sft_continued":
        assert summary["algorithm"] == "sft" and summary["optimizer_updates"] == 2
    else:
        assert summary["loss_name"] == config.loss_name
        assert summary["optimizer_updates"] == 2 * config.train.minibatches
