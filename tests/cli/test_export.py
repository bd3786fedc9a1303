"""cli.export: a run's checkpoint as an HF directory that transformers loads without warnings
and completes greedily exactly as our sampler does."""

import json
import logging
import os
import warnings

import jax
import numpy as np
import pytest
from flax import nnx
from gsm8k_testing import (
    ROOT,
    chat_prompt_ids,
    facade_run,
    greedy_ours,
    greedy_transformers,
    make_world,
    shared_root,
    world_overrides,
)
from safetensors.numpy import load_file

from trlx_jax.cli import export as export_cli
from trlx_jax.config import load_config, save_config
from trlx_jax.data import load_tokenizer
from trlx_jax.models import load_hf

QUESTIONS = ["Tom has 3 apples and gets 4 more. How many apples now?", "Ana has 5 pens.",
             "Mia has 12 cards and gets 9 more."]


@pytest.fixture(scope="module")
def run(tmp_path_factory, worker_id):
    return facade_run(shared_root(tmp_path_factory, worker_id))


def load_quietly(directory, caplog):
    """transformers' model and tokenizer of `directory`, and every warning they raised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    caplog.set_level(logging.WARNING)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory).eval()
    messages = [str(w.message) for w in caught]
    messages += [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    return model, tokenizer, messages


def test_export_writes_a_chosen_checkpoint_that_transformers_loads(run, tmp_path, caplog,
                                                                   capsys):
    latest, first = tmp_path / "latest", tmp_path / "step1"
    assert export_cli.main([f"--run_dir={run.run_dir}", f"--out={latest}"]) == 0
    assert "at step 2" in capsys.readouterr().out
    assert export_cli.main([f"--run_dir={run.run_dir}", f"--out={first}", "--step=1"]) == 0
    # The latest checkpoint is the policy the facade returned; step 1 is the one before.
    exported, _ = load_hf(str(latest))
    for ours, trained in zip(jax.tree.leaves(exported), jax.tree.leaves(run.params),
                             strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(trained))
    before = load_file(str(first / "model.safetensors"))
    after = load_file(str(latest / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)

    # (test_facade compares its greedy completions with transformers': same writer.)
    _, tokenizer, messages = load_quietly(latest, caplog)
    assert messages == []
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    with open(latest / "generation_config.json") as f:
        assert json.load(f)["eos_token_id"] == tokenizer.eos_token_id

    half = tmp_path / "bf16"
    assert export_cli.main([f"--run_dir={run.run_dir}", f"--out={half}", "--dtype=bfloat16"]) == 0
    assert {str(v.dtype) for v in load_file(str(half / "model.safetensors")).values()} == {
        "bfloat16"}


def test_export_refuses_what_is_not_a_finished_run(run, tmp_path, capsys):
    assert export_cli.main([f"--run_dir={tmp_path}", f"--out={tmp_path / 'o'}"]) == 2
    assert "no config.json: it is not a run directory" in capsys.readouterr().err
    save_config(load_config(str(ROOT / "configs" / "default.py")), str(tmp_path))
    assert export_cli.main([f"--run_dir={tmp_path}", f"--out={tmp_path / 'o'}"]) == 2
    assert "no checkpoints/ directory: train it first" in capsys.readouterr().err
    assert export_cli.main([f"--run_dir={run.run_dir}", f"--out={tmp_path / 'o'}",
                            "--step=7"]) == 2
    assert "no checkpoint of step 7; it has [1, 2]" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_llama3_rope_checkpoint_round_trips_without_warnings(tmp_path, caplog):
    """load_hf -> write_hf keeps llama3 RoPE's context length an integer (transformers warns on
    a float) and the completions of the source checkpoint."""
    world = make_world(tmp_path, "llama")
    source = world / "llama"
    model, config = load_hf(str(source))
    out = export_cli.write_hf(nnx.state(model), config, load_tokenizer(source),
                              str(tmp_path / "out"), source=str(source))
    with open(os.path.join(out, "config.json")) as f:
        rope = json.load(f)["rope_parameters"]
    assert rope["rope_type"] == "llama3" and rope["original_max_position_embeddings"] == 64
    hf_model, tokenizer, messages = load_quietly(out, caplog)
    assert messages == []
    ids = chat_prompt_ids(tokenizer, QUESTIONS)
    completions = greedy_transformers(hf_model, ids, 12)
    assert greedy_ours(source, ids, 12) == completions
    assert completions == greedy_transformers(load_quietly(source, caplog)[0], ids, 12)



@pytest.mark.slow
def test_gsm8k_llama_config_through_the_cli_then_export(tmp_path, caplog, capsys):
    """configs/gsm8k.py:llama3.2-1b on a tiny random Llama 3 (llama3 RoPE, no pad token) via
    cli.train, exported by cli.export, completes greedily as transformers does."""
    from trlx_jax.cli import train as train_cli

    world = make_world(tmp_path, "llama")
    argv = [f"--config={ROOT / 'configs' / 'gsm8k.py'}:llama3.2-1b",
            f"--config.run_dir={tmp_path / 'run'}"]
    argv += [f"--config.{k}={v}" for k, v in world_overrides(world, "llama").items()]
    assert train_cli.main(argv) == 0
    assert "RL changed greedy test accuracy by" in capsys.readouterr().out
    out = tmp_path / "hf"
    assert export_cli.main([f"--run_dir={tmp_path / 'run'}", f"--out={out}"]) == 0
    model, tokenizer, messages = load_quietly(out, caplog)
    assert messages == []
    assert tokenizer.eos_token == "<|eot_id|>"
    ids = chat_prompt_ids(tokenizer, QUESTIONS)
    assert greedy_ours(out, ids, 12) == greedy_transformers(model, ids, 12)
