"""trlx_jax.train: configs/gsm8k.py end to end on a tiny random Qwen2 checkpoint, overrides,
prompts and the run-directory guard."""

import json
import logging
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from gsm8k_testing import (
    chat_prompt_ids,
    facade_run,
    greedy_ours,
    greedy_transformers,
    shared_root,
)

import trlx_jax
from trlx_jax import facade
from trlx_jax.config import ConfigError
from trlx_jax.trainer.metrics import read_metrics

# bfloat16 compute: the sampler's and the trainer's log-probs of the same tokens differ by
# bfloat16 rounding (different op order: KV-cache decode vs one full forward; a bfloat16 vs a
# float32 LM head). Measured on this tiny model: |log r| mean 0.007-0.009, max 0.04-0.05 nats.
BF16_MISMATCH_MEAN = 0.02
BF16_MISMATCH_MAX = 0.15


@pytest.fixture(scope="module")
def run(tmp_path_factory, worker_id):
    return facade_run(shared_root(tmp_path_factory, worker_id))


def test_gsm8k_config_trains_through_the_facade(run):
    assert isinstance(run, trlx_jax.TrainedPolicy)
    assert run.config.model.dtype == "bfloat16" and run.config.model.param_dtype == "float32"
    assert {str(x.dtype) for x in jax.tree.leaves(run.params)} == {"float32"}
    rows = read_metrics(run.run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        for key in ("reward/numeric_match/mean", "reward/format/mean", "accuracy", "loss",
                    "troll_projected_frac", "grad_norm"):
            assert row.get(key) is not None, key
        assert row["lr"] == pytest.approx(1e-6)
        # The mismatch is bfloat16's (float32 compute gives ~1e-7) and stays small.
        assert 1e-4 < row["mismatch/abs_log_ratio_mean"] < BF16_MISMATCH_MEAN
        assert row["mismatch/abs_log_ratio_max"] < BF16_MISMATCH_MAX
    assert sorted(os.listdir(os.path.join(run.run_dir, "checkpoints")))[-2:] == ["1", "2"]
    with open(os.path.join(run.run_dir, facade.FACADE_FILE)) as f:
        assert json.load(f) == dict.fromkeys(("prompts", "eval_prompts", "reward_fn",
                                              "metric_fn"))


def test_generate_evaluate_and_save_hf_agree_with_transformers(run, tmp_path, caplog):
    # Four prompts: the shapes of the run's evaluation, whose compiled sampler is reused.
    texts = ["Tom has 3 apples and gets 4 more. How many apples now?", "Ana has 5 pens.",
             "Mia has 12 cards and gets 9 more.", "Li has 2 coins."]
    greedy = run.generate(texts)
    assert len(greedy) == 4 and all(isinstance(t, str) for t in greedy)
    assert run.generate(texts) == greedy  # greedy decoding is deterministic
    with pytest.raises(ValueError, match="unknown sampling option.*temperature"):
        run.generate(texts, temprature=1.0)
    with pytest.raises(ValueError, match="list of strings"):
        run.generate(texts[0])

    metrics = run.evaluate()
    assert metrics["eval/num_problems"] == 4
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run.save_hf(tmp_path / "hf")
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not [str(w.message) for w in caught]
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    ids = chat_prompt_ids(tokenizer, texts[:3])
    ours = greedy_ours(tmp_path / "hf", ids, 12)
    assert ours == greedy_transformers(model, ids, 12)
    assert {len(c) for c in ours} != {0}


def test_overrides_are_checked_like_command_line_overrides(tmp_path):
    config = facade.resolve_config(None, {"optimizer__lr": 1e-5, "train__steps": 3,
                                          "run_dir": str(tmp_path)})
    assert config.optimizer.lr == 1e-5 and config.train.steps == 3 and config.is_locked
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr'.*optimizer\.lr.*optimizer__lr"):
        trlx_jax.train(optimizer__lrr=1e-5)
    with pytest.raises(ConfigError, match=r"'lr'.*optimizer\.lr"):
        trlx_jax.train(lr=1e-5)
    with pytest.raises(ConfigError, match="train__steps"):
        facade.resolve_config(None, {"train__steps": "many"})
    base = facade.resolve_config(None, {})
    changed = facade.resolve_config(base, {"seed": 3})
    assert (base.seed, changed.seed) == (0, 3)
    with pytest.raises(ConfigError, match="does not exist"):
        trlx_jax.train("gpt2", reward_fn=len, prompts=["a"])


def test_prompts_become_examples_with_metadata():
    examples = facade.prompt_examples(["2+3=", "4+4="], "prompts")
    assert examples == [{"question": "2+3="}, {"question": "4+4="}]
    rows = facade.prompt_examples([{"prompt": "2+3=", "answer": "5"},
                                   {"prompt": "4+4=", "answer": "8"}], "prompts")
    assert rows[1] == {"question": "4+4=", "answer": "8"}
    for bad, message in (("2+3=", "list of strings or dicts"), ([], "empty"),
                         ([{"text": "x"}], r"prompts\[0\].*'prompt' string"),
                         ([{"prompt": "a", "answer": 1}, {"prompt": "b"}], "same metadata"),
                         ([{"prompt": "a", "question": "q"}], "'question' field")):
        with pytest.raises(ValueError, match=message):
            facade.prompt_examples(bad, "prompts")
    with pytest.raises(ValueError, match="prompts need a reward_fn"):
        trlx_jax.train(prompts=["a"])
    with pytest.raises(ValueError, match="eval_prompts needs prompts"):
        trlx_jax.train(reward_fn=len, eval_prompts=["a"])


def test_trlx_functions_are_called_by_keyword():
    def reward_fn(samples, **kwargs):  # the trlx examples' signature
        return [float(len(s)) for s in samples]

    reward = facade.KeywordReward(reward_fn)
    assert reward(["ab", "c"], ["a", "b"], ["b", "c"], answer=["1", "2"]) == [2.0, 1.0]
    assert facade.KeywordReward(lambda samples, **kw: []).__name__ == "reward_fn"
    metrics = facade.KeywordMetrics(lambda samples, prompts, outputs, **kw: {"n": [1, 2]})
    np.testing.assert_array_equal(metrics(["a", "b"], ["a", "b"], ["", ""])["n"], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 finite floats"):
        facade.KeywordMetrics(lambda **kw: {"n": [1.0]})(["a", "b"], ["a", "b"], ["", ""])


def test_a_run_directory_of_other_prompts_is_refused(tmp_path):
    run_dir = str(tmp_path / "run")
    mine = {"prompts": "abc", "eval_prompts": None, "reward_fn": "reward_fn", "metric_fn": None}
    facade.check_fingerprint(run_dir, mine)  # a new directory: recorded
    (tmp_path / "run" / "config.json").write_text("{}")
    facade.check_fingerprint(run_dir, mine)  # the same run: resumable
    with pytest.raises(ConfigError, match="other prompts.*run_dir=<another directory>"):
        facade.check_fingerprint(run_dir, {**mine, "prompts": "xyz"})
    os.remove(tmp_path / "run" / facade.FACADE_FILE)  # a run of the config alone (the CLI's)
    with pytest.raises(ConfigError, match="other prompts, reward_fn"):
        facade.check_fingerprint(run_dir, mine)


def test_import_is_cheap_and_train_is_the_facade():
    # trlx_jax.cli.train is a module named train: it must not become trlx_jax.train.
    code = ("import sys, trlx_jax; f = trlx_jax.train; import trlx_jax.cli.train; "
            "assert 'jax' not in sys.modules, 'jax imported'; "
            "assert trlx_jax.train is f and f.__module__ == 'trlx_jax.facade'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ,
                                                                   "JAX_PLATFORMS": "cpu"})
