"""The jitted RL and SFT steps: exact micro-batch accumulation, one compile, real updates."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from trainer_testing import VOCAB, K

from trlx_jax.models import make_mesh
from trlx_jax.objectives.aggregation import MODES
from trlx_jax.objectives.config import get_default_config as loss_defaults
from trlx_jax.trainer.batch import LogProbSpec
from trlx_jax.trainer.state import create_state, make_optimizer
from trlx_jax.trainer.step import SFTBatch, UpdateSchedule, make_rl_train_step, make_sft_train_step


def optimizer_config(**changes):
    base = dict(lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0, grad_clip=0.0, warmup_steps=0,
                schedule="constant")
    return ml_collections.ConfigDict({**base, **changes})


def make_step(tiny_model, batch, *, loss="troll", updates=None, tx=None, **loss_kw):
    graphdef, params, _ = tiny_model
    mesh = make_mesh((1, 1, 1))
    adamw, schedule = make_optimizer(optimizer_config(), 100)
    tx = tx or adamw
    state, shardings = create_state(params, tx, jax.random.key(3), mesh)
    cfg = loss_defaults()
    cfg.troll_k = K
    cfg.update(loss_kw)
    updates = updates or UpdateSchedule()
    spec = LogProbSpec(1.0, top_k=K if loss.startswith("troll") else 0,
                       gather_old_topk=loss.startswith("dppo_topk"))
    step = make_rl_train_step(graphdef=graphdef, tx=tx, schedule=schedule, loss_name=loss,
                              loss_cfg=cfg, logprob_spec=spec, vocab_size=VOCAB, updates=updates,
                              mesh=mesh, state_shardings=shardings, batch_example=batch)
    return step, state, mesh


def perturbed(batch):
    """The batch with behaviour log-probs moved off the current policy (ratios != 1)."""
    noise = 0.3 * jax.random.normal(jax.random.key(9), batch.old.logp.shape)
    return batch._replace(old=batch.old._replace(logp=batch.old.logp + noise))


@pytest.mark.parametrize("mode", MODES)
def test_microbatch_accumulation_equals_unsplit_minibatch(tiny_model, rollout_batch, mode):
    """Through the real step with SGD (so the parameter change is the gradient itself):
    4 accumulated micro-batches == the unsplit minibatch, for every aggregation mode."""
    _, batch = rollout_batch
    batch = perturbed(batch)
    before = [np.asarray(x) for x in jax.tree.leaves(tiny_model[1])]
    results = []
    for micro in (1, 4):
        step, state, mesh = make_step(tiny_model, batch, loss="clip", aggregation=mode,
                                      updates=UpdateSchedule(1, 1, micro), tx=optax.sgd(1.0))
        with jax.set_mesh(mesh):
            state, metrics = step(state, batch)
        delta = [np.asarray(a) - b for a, b in zip(jax.tree.leaves(state.params), before,
                                                    strict=True)]
        results.append((delta, jax.device_get(metrics)))
    (d1, m1), (d4, m4) = results
    assert set(m1) == set(m4)
    for key in m1:
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-6, atol=1e-7, err_msg=key)
    scale = max(float(np.abs(d).max()) for d in d1)
    assert scale > 0
    worst = max(float(np.abs(a - b).max()) for a, b in zip(d1, d4, strict=True))
    assert worst <= 1e-6 * scale
    assert m1["clip_frac"] > 0  # the perturbation makes the trust region act


def test_steps_after_the_first_do_not_recompile_and_change_params(tiny_model, rollout_batch):
    _, batch = rollout_batch
    step, state, mesh = make_step(tiny_model, batch, updates=UpdateSchedule(2, 2, 2))
    before = jax.device_get(state.params)
    with jax.set_mesh(mesh):
        for _ in range(4):
            state, metrics = step(state, batch)
    assert step._cache_size() == 1
    assert int(state.step) == 4 * 4
    after = jax.device_get(state.params)
    change = max(float(jnp.abs(a - b).max()) for a, b in
                 zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))
    assert change > 1e-4
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0


def test_first_minibatch_sees_the_behaviour_policy(tiny_model, rollout_batch):
    """Before any update the trainer's log-probs equal the sampler's (~1e-7 in float32)."""
    _, batch = rollout_batch
    step, state, mesh = make_step(tiny_model, batch, updates=UpdateSchedule(1, 4, 1))
    with jax.set_mesh(mesh):
        _, metrics = step(state, batch)
    assert float(metrics["mismatch/abs_log_ratio_max"]) < 1e-5
    # Later minibatches are off-policy: the trust region has something to do.
    assert float(metrics["abs_log_ratio_max"]) > 1e-4


def test_state_is_donated(tiny_model, rollout_batch):
    _, batch = rollout_batch
    step, state, mesh = make_step(tiny_model, batch)
    leaf = jax.tree.leaves(state.params)[0]
    with jax.set_mesh(mesh):
        step(state, batch)
    assert leaf.is_deleted()


def test_sft_step_lowers_the_loss(tiny_model, rollout_batch):
    graphdef, params, _ = tiny_model
    _, rl = rollout_batch
    batch = SFTBatch(rl.tokens, rl.attention_mask, rl.response_mask)
    mesh = make_mesh((1, 1, 1))
    tx, schedule = make_optimizer(optimizer_config(lr=1e-2), 100)
    state, shardings = create_state(params, tx, jax.random.key(0), mesh)
    step = make_sft_train_step(graphdef=graphdef, tx=tx, schedule=schedule, mesh=mesh,
                               state_shardings=shardings, batch_example=batch)
    with jax.set_mesh(mesh):
        losses = []
        for _ in range(10):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.8 * losses[0]
    assert float(metrics["tokens"]) == float(rl.response_mask.sum())
    assert step._cache_size() == 1


def test_warmup_then_cosine_schedule():
    tx, schedule = make_optimizer(optimizer_config(warmup_steps=10, schedule="cosine"), 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)
    _, constant = make_optimizer(optimizer_config(warmup_steps=10), 110)
    assert float(constant(5)) == pytest.approx(5e-4)
    assert float(constant(100)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer(optimizer_config(schedule="linear"), 10)
