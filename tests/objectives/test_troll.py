"""The troll / troll_gspo losses against an independent dense float64 reference (values and
gradients), plus their edge cases: old == new, padding, settings, metrics."""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from trlx_jax.objectives import policy_loss
from trlx_jax.objectives.config import get_default_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "ops"))
import troll_reference as ref  # noqa: E402

B, T, V, K = 2, 3, 9, 4
MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _cfg(**overrides):
    cfg = get_default_config()
    cfg.troll_k = K
    cfg.troll_delta = 1e-3
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _problem(seed, move=1.5):
    rng = np.random.default_rng(seed)
    old_logits = rng.normal(0, 2, (B, T, V))
    logits = old_logits + rng.normal(0, move, (B, T, V))
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    adv = np.array([1.0, -0.7])
    return logits, old_logits, ids, adv


def _batch(logits, old_logits, ids, adv, mask=MASK):
    """The loss batch the train step would build from current and rollout logits."""
    lp = jax.nn.log_softmax(logits, axis=-1)
    olp = jax.nn.log_softmax(old_logits, axis=-1)
    topk_logp, topk_ids = jax.lax.top_k(lp, K)
    old_topk_logp, old_topk_ids = jax.lax.top_k(olp, K)
    at = lambda x, i: jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]
    return {
        "logp": at(lp, ids),
        "old_logp": at(olp, ids),
        "advantages": jnp.asarray(adv),
        "response_mask": jnp.asarray(mask),
        "sampled_ids": jnp.asarray(ids),
        "topk_ids": topk_ids,
        "topk_logp": topk_logp,
        "old_topk_ids": old_topk_ids,
        "old_topk_logp": old_topk_logp,
        "logp_at_old_topk": jnp.take_along_axis(lp, old_topk_ids, axis=-1),
        "vocab_size": V,
    }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _value_and_grad_jit(name, cfg_items, logits, old_logits, ids, adv):
    cfg = _cfg(**dict(cfg_items))

    def loss(x):
        loss_sum, denom, metrics = policy_loss(name)(_batch(x, old_logits, ids, adv), cfg)
        return loss_sum / denom, metrics

    return jax.value_and_grad(loss, has_aux=True)(logits)


def _value_and_grad(name, logits, old_logits, ids, adv, **overrides):
    items = tuple(sorted(overrides.items()))
    (value, metrics), grad = _value_and_grad_jit(name, items, logits, old_logits, ids, adv)
    return float(value), metrics, np.asarray(grad)


def _reference(logits, old_logits, ids, adv, gspo=False, union=False, frozen=None):
    """Dense float64 TROLL loss (token-mean, eps 0.05, alpha 1) per spec section 4.

    `frozen` (the `proj` of an earlier call) holds the projection that the regression term
    KL(new || sg(p)) uses, for differentiating with p held fixed.
    """
    log_r, reg, eta = np.zeros((B, T)), np.zeros((B, T)), np.zeros((B, T))
    proj = {}
    for b, t in zip(*np.nonzero(MASK), strict=True):
        new, old, _ = ref.support_dense(
            log_softmax(logits[b, t]), log_softmax(old_logits[b, t]), ids[b, t], K, 1e-3, union
        )
        proj[b, t] = ref.project_row(new, old, np.ones(V, bool), 0.05)
        o = ids[b, t]
        log_r[b, t] = proj[b, t]["logp"][o] - old[o]
        eta[b, t] = proj[b, t]["eta"]
        p = (frozen or proj)[b, t]
        if p["eta"] > 0:
            reg[b, t] = np.sum(np.exp(new) * (new - p["logp"]))
    if gspo:
        seq = (log_r * MASK).sum(-1, keepdims=True) / MASK.sum(-1, keepdims=True)
        log_r = np.minimum(np.broadcast_to(seq, (B, T)), 10.0)
    per_token = -adv[:, None] * np.exp(log_r) + reg
    parts = {"reg": reg, "eta": eta, "log_r": log_r, "proj": proj}
    return (per_token * MASK).sum() / MASK.sum(), parts


@pytest.mark.parametrize("name,union", [("troll", False), ("troll_gspo", False), ("troll", True)])
def test_value_and_gradient_vs_dense_reference(x64, name, union):
    logits, old_logits, ids, adv = _problem(0)
    gspo = name == "troll_gspo"
    value, metrics, grad = _value_and_grad(
        name, logits, old_logits, ids, adv, troll_new_logp_on_union=union
    )
    want, parts = _reference(logits, old_logits, ids, adv, gspo=gspo, union=union)
    assert (parts["eta"][MASK] > 0).sum() >= 3, "some tokens should be projected"
    np.testing.assert_allclose(value, want, rtol=1e-8)
    np.testing.assert_allclose(metrics["troll_reg_mean"], parts["reg"][MASK].mean(), rtol=1e-7)
    # The gradient against central differences of the reference (the kept sets do not move),
    # with the regression term's projection held fixed (it is stop-gradient in the loss).
    h = 1e-6
    fd = np.zeros_like(logits)
    kw = dict(gspo=gspo, union=union, frozen=parts["proj"])
    for idx in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[idx] = h
        up = _reference(logits + step, old_logits, ids, adv, **kw)[0]
        down = _reference(logits - step, old_logits, ids, adv, **kw)[0]
        fd[idx] = (up - down) / (2 * h)
    assert np.linalg.norm(grad - fd) <= 1e-5 * np.linalg.norm(fd), np.abs(grad - fd).max()
    assert np.all(grad[1, 2] == 0)  # the padded position


def test_old_equal_new_is_plain_policy_gradient(x64):
    logits, _, ids, adv = _problem(1)
    value, metrics, grad = _value_and_grad("troll", logits, logits, ids, adv)
    # Ratio 1 everywhere, nothing projected, no regression term.
    np.testing.assert_allclose(value, -(adv[:, None] * MASK).sum() / MASK.sum(), rtol=1e-12)
    assert float(metrics["troll_projected_frac"]) == 0.0
    assert float(metrics["troll_reg_mean"]) == 0.0
    assert float(metrics["troll_kl_before_max"]) == pytest.approx(0, abs=1e-12)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # The gradient is that of -A * q(o) / sg(q(o)) with q the sparse renormalized new policy.
    want = _reference(logits, logits, ids, adv)[0]
    np.testing.assert_allclose(value, want, rtol=1e-12)


def test_metrics(x64):
    logits, old_logits, ids, adv = _problem(2)
    _, metrics, _ = _value_and_grad("troll", logits, old_logits, ids, adv)
    _, parts = _reference(logits, old_logits, ids, adv)
    projected = parts["eta"] > 0
    np.testing.assert_allclose(metrics["troll_projected_frac"], projected[MASK].mean())
    np.testing.assert_allclose(
        metrics["troll_eta_mean"], parts["eta"][projected & MASK].mean(), rtol=1e-6
    )
    assert float(metrics["troll_kl_after_mean"]) <= 0.05 + 1e-7  # metrics are float32
    assert float(metrics["troll_violation_max"]) == 0.0
    assert float(metrics["troll_kl_before_max"]) >= float(metrics["troll_kl_before_mean"]) > 0.05
    for key in ("num_tokens", "clip_frac", "ratio_mean", "approx_kl"):
        assert key in metrics  # the standard bundle
    assert float(metrics["num_tokens"]) == MASK.sum()


def test_gspo_ratio_is_capped(x64):
    logits, old_logits, ids, adv = _problem(3)
    _, metrics, grad = _value_and_grad(
        "troll_gspo", logits, old_logits, ids, adv, gspo_log_ratio_cap=-5.0, troll_alpha=0.0
    )
    # Clamped from above: the value is the cap and the ratio term carries no gradient.
    np.testing.assert_allclose(metrics["troll_ratio_mean"], np.exp(-5.0), rtol=1e-6)
    assert np.all(grad == 0)


def test_padding_may_hold_garbage(x64):
    logits, old_logits, ids, adv = _problem(4)
    batch = _batch(logits, old_logits, ids, adv)
    poison = jnp.where(jnp.asarray(MASK), 0.0, jnp.nan)
    for key in ("logp", "old_logp"):
        batch[key] = batch[key] + poison
    for key in ("topk_logp", "old_topk_logp", "logp_at_old_topk"):
        batch[key] = batch[key] + poison[..., None]
    batch["topk_ids"] = jnp.where(jnp.asarray(MASK)[..., None], batch["topk_ids"], 0)

    def loss(logp, topk_logp):
        s, d, _ = policy_loss("troll")(dict(batch, logp=logp, topk_logp=topk_logp), _cfg())
        return s / d

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    value, grads = f(batch["logp"], batch["topk_logp"])
    want = _value_and_grad("troll", logits, old_logits, ids, adv)[0]
    np.testing.assert_allclose(value, want, rtol=1e-12)
    for g in grads:
        assert np.isfinite(g).all() and np.all(np.asarray(g)[~MASK] == 0)


def test_settings_are_validated():
    logits, old_logits, ids, adv = _problem(5)
    batch = _batch(logits, old_logits, ids, adv)
    loss = policy_loss("troll")
    for key, value in (
        ("troll_eps", 0.0),
        ("troll_alpha", -1.0),
        ("troll_k", 0),
        ("troll_delta", 1.0),
        ("troll_old_source", "replay"),
    ):
        with pytest.raises(ValueError, match=key):
            loss(batch, _cfg(**{key: value}))
    with pytest.raises(KeyError, match="vocab_size"):
        loss({k: v for k, v in batch.items() if k != "vocab_size"}, _cfg())
    jax.eval_shape(lambda b: loss(b, _cfg(troll_old_source="recompute")), batch)


def test_float32_loss_is_finite_with_gradients():
    logits, old_logits, ids, adv = _problem(6, move=4.0)
    value, metrics, grad = _value_and_grad(
        "troll",
        logits.astype(np.float32),
        old_logits.astype(np.float32),
        ids,
        adv.astype(np.float32),
    )
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert grad.dtype == np.float32
    assert all(np.isfinite(float(v)) for v in metrics.values())
