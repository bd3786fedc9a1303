"""Helpers of the trainer tests: a tiny model config and a tiny run config."""

import math
import os

import ml_collections

from trlx_jax.config import load_config
from trlx_jax.models import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K = 8
VOCAB = 64


def tiny_model_config() -> ModelConfig:
    return ModelConfig(model_type="qwen3", vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                       num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True,
                       tie_word_embeddings=True)


def tiny_overrides(tmp_path) -> dict:
    """Overrides that shrink a configs/ experiment to seconds: tiny task, model and warm-up, two
    steps, one device; paths under tmp_path (the task's TFDS data in its parent, shared)."""
    return {
        "run_dir": str(tmp_path / "run"),
        "data.data_dir": str(tmp_path.parent / "tfds"),
        "data.task_options": "num_train=300,num_test=40",
        "data.prompts_per_step": 4,
        "rollout.num_samples": 4,
        "rollout.record_top_k": 8,
        "loss.troll_k": 8,
        "model.hidden_size": 32,
        "model.intermediate_size": 64,
        "model.head_dim": 8,
        "train.steps": 2,
        "train.minibatches": 2,
        "train.eval_every": 1,
        "train.eval_examples": 16,
        "sft.steps": 3,
        "sft.batch_size": 16,
        "sft.num_examples": 64,
        "sft.cache_dir": str(tmp_path / "sft_cache"),
        "logging.progress": False,
        # One device keeps the many short runs fast; test_cli_runs_a_shortened_main_job keeps the
        # default mesh (-1, 1, 1): data parallel over the 8 simulated devices.
        "mesh.shape": (1, 1, 1),
    }


def run_config(tmp_path, loss_name: str = "troll", **changes) -> ml_collections.ConfigDict:
    """configs/default.py shrunk to seconds (tiny_overrides) with `loss_name` and `changes`."""
    return load_config(os.path.join(ROOT, "configs", "default.py"),
                       override_args({**tiny_overrides(tmp_path), "loss_name": loss_name,
                                      **changes}))


def override_args(overrides: dict) -> list[str]:
    """{key: value} -> the `KEY=VALUE` arguments of load_config."""
    return [f"{k}={v}" for k, v in overrides.items()]


def length_closeness(samples, prompts, outputs, **metadata) -> list[float]:
    """A dense reward for tests: near 1 for completions of about 3 characters.

    A few warm-up steps solve no problem, so the task's 0/1 reward alone leaves every advantage
    at 0 and every update empty; this one varies within groups (`data.rewards=
    "length_closeness:1"`), so losses, KL and gradients are really exercised.
    """
    return [1.0 / (1.0 + abs(len(o) - 3)) for o in outputs]


def register_length_reward() -> None:
    """Registers `length_closeness` as a reward term (once per process)."""
    from trlx_jax.data.rewards import REWARDS

    if "length_closeness" not in REWARDS:
        REWARDS.register("length_closeness")(length_closeness)


# Metrics equal on every mesh and process count (the same completions are sampled), and those
# that are not compared (wall-clock).
EXACT_PREFIXES = ("reward", "accuracy", "response/", "eval/", "advantage", "skipped")
NOT_COMPARED = ("time/", "tokens_per_s/")


def assert_same_metrics(reference: list[dict], rows: list[dict], where: str) -> None:
    """Equal rewards/accuracy/lengths, other metrics within 1e-4 relative (1e-6 absolute)."""
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for ref, row in zip(reference, rows, strict=True):
        assert set(row) == set(ref), f"{where}, step {ref['step']}: other metric keys"
        for key, value in ref.items():
            if key.startswith(NOT_COMPARED) or not isinstance(value, (int, float)):
                continue
            if key.startswith(EXACT_PREFIXES):
                assert row[key] == value, f"{where}, step {ref['step']}: {key}"
            else:
                assert math.isclose(row[key], value, rel_tol=1e-4, abs_tol=1e-6), (
                    f"{where}, step {ref['step']}: {key} = {row[key]} vs {value} on one device")
