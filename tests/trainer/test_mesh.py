"""The whole RL run (rollout, rewards, advantages, updates, eval) is mesh-invariant.

Runs of a few steps on 8 simulated CPU devices with meshes (8,1,1), (2,2,2), (1,2,4) give the
metrics of the one-device run: rewards, accuracy and lengths exactly (the same completions are
sampled), losses, KL and gradient norms within 1e-4 relative. Quantities that measure float
round-off itself (|log r| of the first minibatch, which is 0 in exact arithmetic, KL before the
projection) sit near 1e-7 on every mesh; they are compared with an absolute 1e-6, since the
order of a sharded reduction changes their last bits.
"""

import json
import math

import jax
import pytest
from trainer_testing import register_length_reward, run_config

from trlx_jax.models.sharding import state_shardings
from trlx_jax.trainer.loop import Trainer

MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]
EXACT_PREFIXES = ("reward", "accuracy", "response/", "eval/", "advantage", "skipped")
NOT_COMPARED = ("time/", "tokens_per_s/")


def _overrides(tmp_path_factory, shape) -> dict:
    return {
        "mesh.shape": shape,
        # Four KV heads so that a tensor axis of 4 divides them.
        "model.num_kv_heads": 4,
        "data.rewards": "length_closeness:1",
        "train.steps": 2,
        "train.eval_every": 2,
        "sft.cache_dir": str(tmp_path_factory.getbasetemp() / "mesh_sft_cache"),
        "data.data_dir": str(tmp_path_factory.getbasetemp() / "tfds"),
    }


def _run(tmp_path_factory, shape) -> tuple[list[dict], Trainer]:
    register_length_reward()
    tmp = tmp_path_factory.mktemp("mesh_" + "x".join(map(str, shape)))
    trainer = Trainer(run_config(tmp, "troll", **_overrides(tmp_path_factory, shape)))
    trainer.run()
    with open(tmp / "run" / "metrics.jsonl") as f:
        return [json.loads(line) for line in f], trainer


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory, (1, 1, 1))[0]


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


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_run_on_a_mesh_equals_the_one_device_run(tmp_path_factory, reference, shape):
    rows, trainer = _run(tmp_path_factory, shape)
    # Updates happened (non-zero advantages), so the comparison covers real gradients.
    assert all(r["grad_norm"] > 0 for r in rows if r["step"] > 0)
    assert_same_metrics(reference, rows, f"mesh {shape}")

    mesh = trainer.parts.mesh
    assert dict(mesh.shape) == dict(zip(("data", "fsdp", "tensor"), shape, strict=True))
    state = trainer.state
    expected = state_shardings(state.params, mesh)
    # The step's outputs carry the rule table's shardings: params, and Adam's moments like them.
    for actual, rule in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected),
                            strict=True):
        assert actual.sharding.is_equivalent_to(rule, actual.ndim), (actual.sharding, rule)
    adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
            if hasattr(s, "mu")]
    assert adam
    for moments in (adam[0].mu, adam[0].nu):
        for actual, rule in zip(jax.tree.leaves(moments), jax.tree.leaves(expected),
                                strict=True):
            assert actual.sharding.is_equivalent_to(rule, actual.ndim), (actual.sharding, rule)
