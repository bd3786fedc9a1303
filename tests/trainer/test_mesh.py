"""The whole RL run (rollout, rewards, advantages, updates, eval) is mesh-invariant (slow:
four short runs; CI runs them in its `-m slow` step).

Runs of a few steps on 8 simulated CPU devices with meshes (8,1,1), (2,2,2), (1,2,4) give the
metrics of the one-device run: rewards, accuracy and lengths exactly (the same completions are
sampled), losses, KL and gradient norms within 1e-4 relative. Quantities that measure float
round-off itself (|log r| of the first minibatch, which is 0 in exact arithmetic, KL before the
projection) sit near 1e-7 on every mesh; they are compared with an absolute 1e-6, since the
order of a sharded reduction changes their last bits.
"""

import json

import jax
import pytest
from trainer_testing import assert_same_metrics, register_length_reward, run_config

from trlx_jax.models.sharding import state_shardings
from trlx_jax.trainer.loop import Trainer

pytestmark = pytest.mark.slow
MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]


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


def test_gathered_sampling_weights_sample_the_same_completions():
    """rollout.weights="gathered" drops "fsdp" from every weight's sharding (tensor kept) and
    samples exactly what the ZeRO-3 layout samples."""
    import types

    import numpy as np
    from flax import nnx
    from trainer_testing import tiny_model_config

    from trlx_jax.models import init_model, make_mesh, shard_model
    from trlx_jax.rollout import SamplingParams, generate
    from trlx_jax.trainer.phases import sampling_weights

    mesh = make_mesh((1, 4, 2))
    model = init_model(tiny_model_config(), seed=0)
    shard_model(model, mesh)
    graphdef, params = nnx.split(model)
    parts = types.SimpleNamespace(mesh=mesh)
    gathered = sampling_weights(parts, params, "gathered")
    assert sampling_weights(parts, params, "training") is params
    specs = [x.sharding.spec for x in jax.tree.leaves(gathered)]
    assert all("fsdp" not in jax.tree.leaves(tuple(s)) for s in specs)
    assert any("tensor" in jax.tree.leaves(tuple(s)) for s in specs)
    tokens = np.random.default_rng(0).integers(1, 60, (8, 5)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    sampling = SamplingParams(temperature=1.0, record_top_k=4)
    with jax.set_mesh(mesh):
        a, b = (generate((graphdef, w), tokens, mask, key=jax.random.key(1), max_new_tokens=6,
                         sampling=sampling) for w in (params, gathered))
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_allclose(np.asarray(a.logp), np.asarray(b.logp), rtol=1e-5, atol=1e-6)
