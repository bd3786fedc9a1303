"""Policy losses: spec semantics, zero gradients, finite differences, accumulation, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trlx_jax.objectives import POLICY_LOSSES, dppo, losses
from trlx_jax.objectives.aggregation import MODES, finalize
from trlx_jax.objectives.config import get_default_config
from trlx_jax.ops.logprobs import token_logprobs

OWN_LOSSES = [
    "clip",
    "gspo",
    "cispo",
    "dppo_binary_tv",
    "dppo_binary_kl",
    "dppo_topk_tv",
    "dppo_topk_kl",
]
DPPO_LOSSES = [name for name in OWN_LOSSES if name.startswith("dppo_")]


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def config(**overrides):
    cfg = get_default_config()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def make_batch(seed=0, b=8, t=5, v=7, k=3, spread=0.6, lengths=None):
    """A batch from real distributions: mu (rollout) and pi over V, tokens sampled from mu."""
    rng = np.random.default_rng(seed)
    logmu_full = log_softmax(1.5 * rng.standard_normal((b, t, v)))
    logpi_full = log_softmax(logmu_full + spread * rng.standard_normal((b, t, v)))
    logref_full = log_softmax(logmu_full + 0.3 * rng.standard_normal((b, t, v)))
    sampled = (logmu_full + rng.gumbel(size=(b, t, v))).argmax(-1)[..., None]
    old_topk_ids = np.argsort(-logmu_full, axis=-1)[..., :k]
    if lengths is None:
        lengths = rng.integers(0, t + 1, size=b)
    take = lambda full, ids: jnp.asarray(np.take_along_axis(full, ids, axis=-1))
    return {
        "logp": take(logpi_full, sampled)[..., 0],
        "old_logp": take(logmu_full, sampled)[..., 0],
        "ref_logp": take(logref_full, sampled)[..., 0],
        "advantages": jnp.asarray(rng.standard_normal(b)),
        "response_mask": jnp.asarray(np.arange(t) < np.asarray(lengths)[:, None]),
        "sampled_ids": jnp.asarray(sampled[..., 0], jnp.int32),
        "entropy": jnp.asarray(-(np.exp(logpi_full) * logpi_full).sum(-1)),
        "old_topk_ids": jnp.asarray(old_topk_ids, jnp.int32),
        "old_topk_logp": take(logmu_full, old_topk_ids),
        "logp_at_old_topk": take(logpi_full, old_topk_ids),
    }


_COMPILED = {}


def compiled(kind, name, cfg):
    """One jitted function per (kind, loss, settings), reused across calls and tests."""
    key = (kind, name, tuple(sorted(cfg.items())))
    if key not in _COMPILED:
        fn = POLICY_LOSSES.get(name)
        mean = lambda batch: finalize(*fn(batch, cfg)[:2])
        _COMPILED[key] = jax.jit(
            {
                "run": lambda batch: fn(batch, cfg),
                "mean": mean,
                "grad": jax.grad(lambda lp, batch: mean({**batch, "logp": lp})),
            }[kind]
        )
    return _COMPILED[key]


def run(name, cfg, batch):
    """(loss_sum, denominator, metrics) of a registered loss, jitted as the train step would."""
    return compiled("run", name, cfg)(batch)


def mean_loss(name, cfg):
    return compiled("mean", name, cfg)


def grad_logp(name, cfg, batch):
    return compiled("grad", name, cfg)(batch["logp"], batch)


def ratio_of(batch):
    return jnp.exp(batch["logp"] - batch["old_logp"])


def tokens(batch):
    return float(batch["response_mask"].sum())


def reference_keep(name, batch, delta_low, delta_high):
    """The 0/1 mask the spec prescribes for `name`, built from the public helpers."""
    if name == "cispo":
        return batch["response_mask"].astype(batch["logp"].dtype)
    if name.startswith("dppo_binary"):
        fn = dppo.binary_tv if name.endswith("tv") else dppo.binary_kl
        divergence = fn(batch["logp"], batch["old_logp"])
    else:
        slots = dppo.topk_slots(
            batch["old_topk_ids"],
            batch["old_topk_logp"],
            batch["logp_at_old_topk"],
            batch["sampled_ids"],
            batch["logp"],
            batch["old_logp"],
        )
        divergence = (dppo.topk_tv if name.endswith("tv") else dppo.topk_kl)(*slots)
    return dppo.mask(
        divergence,
        batch["logp"],
        batch["old_logp"],
        batch["advantages"],
        batch["response_mask"],
        delta_low,
        delta_high,
    )


def test_registry_holds_every_loss_and_lists_them_on_unknown_names():
    assert set(OWN_LOSSES) <= set(POLICY_LOSSES.names())
    with pytest.raises(KeyError) as err:
        POLICY_LOSSES.get("dppo_binary_tvv")
    for name in OWN_LOSSES:
        assert name in str(err.value)


def test_public_lookup_and_unknown_name():
    import trlx_jax.objectives as objectives

    assert objectives.policy_loss("troll") is POLICY_LOSSES.get("troll")
    assert objectives.policy_loss("dppo_topk_kl") is POLICY_LOSSES.get("dppo_topk_kl")
    with pytest.raises(KeyError, match="dppo_binary_kl"):
        objectives.policy_loss("dppo")


def test_dppo_binary_tv_spec_table_gradient(x64):
    mu = jnp.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1e-4, 0.99])
    pi = jnp.array([0.65, 0.75, 0.35, 0.35, 0.45, 0.90, 1e-2, 0.80])
    adv = jnp.array([1.0, 1, 1, -1, -1, -1, 1, -1])
    batch = {
        "logp": jnp.log(pi)[:, None],
        "old_logp": jnp.log(mu)[:, None],
        "advantages": adv,
        "response_mask": jnp.ones((8, 1), bool),
    }
    cfg = config(delta_low=0.10, delta_high=0.20)
    expected_mask = jnp.array([1.0, 0, 1, 0, 1, 1, 1, 0])
    grad = grad_logp("dppo_binary_tv", cfg, batch)[:, 0]
    # gradient of the token mean: -A * min(r, C = inf) * M / 8, zero exactly where masked.
    np.testing.assert_allclose(grad, -adv * (pi / mu) * expected_mask / 8, rtol=1e-12)
    assert np.all(np.asarray(grad)[expected_mask == 0] == 0.0)


@pytest.mark.parametrize("name", ["cispo", *DPPO_LOSSES])
def test_truncated_is_loss_value_and_gradient_follow_the_spec(x64, name):
    batch = make_batch(seed=2, spread=1.0)
    cap = 1.5
    cfg = config(is_cap=cap, delta_low=0.03, delta_high=0.04)
    loss_sum, denom, _ = run(name, cfg, batch)
    keep = reference_keep(name, batch, 0.03, 0.04)
    if name != "cispo":
        assert 0 < float(keep.sum()) < tokens(batch), "the case must mask some tokens, not all"
    adv = batch["advantages"][:, None]
    weight = jnp.minimum(ratio_of(batch), cap)
    assert float((weight == cap).sum()) > 0, "the case must exercise the cap"
    np.testing.assert_allclose(loss_sum, (-adv * weight * keep * batch["logp"]).sum(), rtol=1e-12)
    np.testing.assert_allclose(denom, tokens(batch))
    np.testing.assert_allclose(
        grad_logp(name, cfg, batch), -adv * weight * keep / tokens(batch), rtol=1e-12, atol=0
    )


def test_ppo_equivalence_of_the_mask(x64):
    """D := |r - 1| and delta := eps reproduce exactly PPO's clipped (zero-gradient) tokens."""
    batch = make_batch(seed=2, b=16, t=6, spread=0.4, lengths=jnp.full(16, 6))
    cfg = config(eps_low=0.2, eps_high=0.28)
    r = ratio_of(batch)
    adv = batch["advantages"]
    ppo_mask = dppo.mask(
        jnp.abs(r - 1), batch["logp"], batch["old_logp"], adv, batch["response_mask"], 0.2, 0.28
    )
    grad = grad_logp("clip", cfg, batch)
    assert 0 < float(ppo_mask.mean()) < 1
    np.testing.assert_array_equal(grad != 0, ppo_mask == 1)
    np.testing.assert_allclose(grad, -adv[:, None] * r * ppo_mask / r.size, rtol=1e-12)
    # Independently of the helper: PPO clips A > 0 above 1 + eps_high, A < 0 below 1 - eps_low.
    a = adv[:, None]
    clipped = ((a > 0) & (r > 1.28)) | ((a < 0) & (r < 0.8))
    np.testing.assert_array_equal(ppo_mask == 0, clipped)
    metrics = POLICY_LOSSES.get("clip")(batch, cfg)[2]
    np.testing.assert_allclose(metrics["clip_frac"], float(clipped.mean()), rtol=1e-6)


def test_clip_dual_clip_bounds_negative_advantage_loss(x64):
    logp = jnp.log(jnp.array([[0.9, 0.9, 0.2]]))
    batch = {
        "logp": logp,
        "old_logp": jnp.log(jnp.array([[0.1, 0.35, 0.1]])),
        "advantages": jnp.array([-1.0]),
        "response_mask": jnp.ones((1, 3), bool),
    }
    cfg = config(dual_clip_c=3.0)
    loss_sum, _, metrics = run("clip", cfg, batch)
    # r = 9, 18/7, 2: the loss -A * r is bounded by -A * c = 3 for the first token only.
    np.testing.assert_allclose(loss_sum, 3 + 18 / 7 + 2, rtol=1e-12)
    grad = grad_logp("clip", cfg, batch)
    assert float(grad[0, 0]) == 0.0
    np.testing.assert_allclose(grad[0, 1:], [18 / 7 / 3, 2 / 3], rtol=1e-12)
    np.testing.assert_allclose(metrics["dual_clip_frac"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["clip_frac_neg"], 1 / 3, rtol=1e-6)
    # Without dual clip the same tokens give -A * r.
    np.testing.assert_allclose(run("clip", config(), batch)[0], 9 + 18 / 7 + 2, rtol=1e-12)
    with pytest.raises(ValueError, match="dual_clip_c"):
        losses.clip_loss(batch, config(dual_clip_c=0.9))


@pytest.mark.parametrize("name", OWN_LOSSES)
def test_padding_and_masked_tokens_get_exactly_zero_gradient(x64, name):
    batch = make_batch(seed=3, spread=1.5)
    padding = ~batch["response_mask"]
    # Garbage where there is no response token must not matter.
    batch["old_logp"] = jnp.where(padding, -jnp.inf, batch["old_logp"])
    batch["entropy"] = jnp.where(padding, jnp.nan, batch["entropy"])
    cfg = config(delta_low=0.05, delta_high=0.05, eps_low=0.1, eps_high=0.1)
    loss_sum, denom, metrics = run(name, cfg, batch)
    assert np.isfinite(loss_sum) and np.isfinite(denom)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    grad = np.asarray(grad_logp(name, cfg, batch))
    assert np.all(grad[np.asarray(padding)] == 0.0)
    assert np.all(np.isfinite(grad))
    if name in DPPO_LOSSES:
        # Masked response tokens: exactly zero, and the case has some.
        assert float(metrics["clip_frac"]) > 0
        nonzero = (grad != 0) & np.asarray(batch["response_mask"])
        np.testing.assert_allclose(nonzero.sum(), (1 - float(metrics["clip_frac"])) * tokens(batch))


def test_dppo_default_deltas_are_the_paper_values(x64):
    # One token moving up with A > 0: binary TV 0.17, binary KL ~0.06.
    batch = {
        "logp": jnp.log(jnp.array([[0.67]])),
        "old_logp": jnp.log(jnp.array([[0.5]])),
        "advantages": jnp.array([1.0]),
        "response_mask": jnp.ones((1, 1), bool),
    }
    default = config()
    assert grad_logp("dppo_binary_tv", default, batch)[0, 0] == 0  # 0.17 > 0.15
    assert grad_logp("dppo_binary_tv", config(delta_high=0.2), batch)[0, 0] != 0
    assert grad_logp("dppo_binary_kl", default, batch)[0, 0] == 0  # 0.0597 > 0.05
    assert grad_logp("dppo_binary_kl", config(delta_high=0.07), batch)[0, 0] != 0


@pytest.mark.parametrize("family", ["tv", "kl"])
def test_topk_loss_with_k1_equals_binary_loss(x64, family):
    batch = make_batch(seed=4, k=1, spread=1.0)
    cfg = config(delta_low=0.02, delta_high=0.03, is_cap=2.0)
    topk, binary = f"dppo_topk_{family}", f"dppo_binary_{family}"
    got, want = run(topk, cfg, batch), run(binary, cfg, batch)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-9)
    np.testing.assert_allclose(got[2]["divergence_mean"], want[2]["divergence_mean"], rtol=1e-6)
    assert 0 < float(got[2]["clip_frac"]) < 1
    np.testing.assert_allclose(
        grad_logp(topk, cfg, batch), grad_logp(binary, cfg, batch), rtol=1e-9, atol=0
    )


def test_topk_direction_uses_the_sampled_token(x64):
    # The top-K divergence is large, but the sampled token moves back toward mu: never masked.
    batch = {
        "logp": jnp.log(jnp.array([[0.2]])),
        "old_logp": jnp.log(jnp.array([[0.3]])),
        "advantages": jnp.array([1.0]),
        "response_mask": jnp.ones((1, 1), bool),
        "sampled_ids": jnp.array([[1]], jnp.int32),
        "old_topk_ids": jnp.array([[[0, 1]]], jnp.int32),
        "old_topk_logp": jnp.log(jnp.array([[[0.6, 0.3]]])),
        "logp_at_old_topk": jnp.log(jnp.array([[[0.05, 0.2]]])),
    }
    cfg = config()
    _, _, metrics = run("dppo_topk_tv", cfg, batch)
    assert float(metrics["divergence_mean"]) > 0.5
    assert grad_logp("dppo_topk_tv", cfg, batch)[0, 0] != 0
    flipped = {**batch, "advantages": jnp.array([-1.0])}
    assert grad_logp("dppo_topk_tv", cfg, flipped)[0, 0] == 0


def test_gspo_uses_the_sequence_ratio(x64):
    batch = make_batch(seed=5, b=3, t=4, spread=0.05, lengths=[4, 2, 3])
    cfg = config(aggregation="seq-mean-token-mean", gspo_eps_low=0.5, gspo_eps_high=0.5)
    valid = batch["response_mask"]
    lengths = valid.sum(-1)
    log_s = jnp.where(valid, batch["logp"] - batch["old_logp"], 0).sum(-1) / lengths
    s = jnp.exp(log_s)
    adv = batch["advantages"]
    loss_sum, denom, _ = run("gspo", cfg, batch)
    np.testing.assert_allclose(loss_sum / denom, (-adv * s).mean(), rtol=1e-12)
    # GSPO's sequence gradient: d(-A s)/dlog pi_t = -A s / |y|, averaged over 3 sequences.
    want = jnp.where(valid, (-adv * s / lengths)[:, None] / 3, 0)
    np.testing.assert_allclose(grad_logp("gspo", cfg, batch), want, rtol=1e-12)


def finite_difference_grad(f, x, h=1e-6):
    flat = np.asarray(x, np.float64).ravel()
    grad = np.zeros_like(flat)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up.reshape(x.shape)) - f(down.reshape(x.shape))) / (2 * h)
    return grad.reshape(x.shape)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("clip", {}),
        ("clip", {"dual_clip_c": 1.2, "kl_coef": 0.3, "kl_estimator": "k3"}),
        ("clip", {"aggregation": "seq-mean-token-sum", "kl_coef": 0.3, "kl_estimator": "k1"}),
        # One sequence inside the clip range, one above (A > 0), one below (A < 0).
        (
            "gspo",
            {"aggregation": "seq-mean-token-mean", "gspo_eps_low": 0.1, "gspo_eps_high": 0.15},
        ),
    ],
)
def test_gradient_matches_finite_differences(x64, name, overrides):
    batch = make_batch(seed=6, b=3, t=3, spread=0.3, lengths=[3, 2, 1])
    cfg = config(eps_low=0.1, eps_high=0.15, **overrides)
    loss = jax.jit(mean_loss(name, cfg))
    f = lambda lp: float(loss({**batch, "logp": jnp.asarray(lp)}))
    want = finite_difference_grad(f, batch["logp"])
    got = grad_logp(name, cfg, batch)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["cispo", *DPPO_LOSSES])
def test_truncated_is_gradient_is_that_of_the_masked_is_surrogate(x64, name):
    """At C = inf, -A sg(r) M log pi has the gradient of -A M r with M held fixed."""
    batch = make_batch(seed=7, b=3, t=3, spread=0.8, lengths=[3, 2, 1])
    cfg = config(delta_low=0.04, delta_high=0.04)
    keep = reference_keep(name, batch, 0.04, 0.04)
    adv = batch["advantages"][:, None]

    def surrogate(lp):
        r = jnp.exp(jnp.asarray(lp) - batch["old_logp"])
        return float((-adv * r * keep).sum() / tokens(batch))

    want = finite_difference_grad(surrogate, batch["logp"])
    np.testing.assert_allclose(grad_logp(name, cfg, batch), want, rtol=1e-6, atol=1e-10)
    assert float(keep.sum()) > 0


def test_gradient_through_the_logprob_op_matches_finite_differences(x64):
    b, t, d, v = 2, 3, 4, 6
    rng = np.random.default_rng(8)
    hidden = jnp.asarray(rng.standard_normal((b, t, d)))
    head = jnp.asarray(rng.standard_normal((d, v)))
    ids = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    old = token_logprobs(hidden, head + 0.3 * rng.standard_normal((d, v)), ids).logp
    cfg = config(eps_low=0.3, eps_high=0.3, kl_coef=0.1)

    @jax.jit
    def loss(h, w):
        out = token_logprobs(h, w, ids, chunk_size=4)
        batch = {
            "logp": out.logp,
            "old_logp": old,
            "ref_logp": old - 0.1,
            "advantages": jnp.array([1.0, -0.5]),
            "response_mask": jnp.array([[1, 1, 1], [1, 1, 0]], bool),
        }
        return finalize(*losses.clip_loss(batch, cfg)[:2])

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(hidden, head)
    for i, (x, g) in enumerate(zip((hidden, head), grads, strict=True)):
        direction = jnp.asarray(rng.standard_normal(x.shape))
        step = 1e-6 * direction
        args_up = [hidden, head]
        args_down = [hidden, head]
        args_up[i] = x + step
        args_down[i] = x - step
        fd = (loss(*args_up) - loss(*args_down)) / 2e-6
        np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=1e-6)


def split_micro_batches(batch, n):
    return [jax.tree.map(lambda x, i=i: np.split(np.asarray(x), n)[i], batch) for i in range(n)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["clip", "gspo", "dppo_topk_kl"])
def test_four_micro_batches_equal_one_batch(x64, mode, name):
    # float64, so that any difference beyond rounding (1e-12) is a wrong (sum, denominator).
    # Ragged lengths, one sequence without any response token.
    batch = make_batch(seed=9, b=8, t=5, spread=0.7, lengths=[5, 1, 3, 0, 2, 5, 4, 1])
    cfg = config(aggregation=mode, norm_length=7 if mode.endswith("norm") else 0, kl_coef=0.05)
    fn = POLICY_LOSSES.get(name)

    @jax.jit
    def sum_and_grad(batch):
        def total(lp):
            loss_sum, denom, _ = fn({**batch, "logp": lp}, cfg)
            return loss_sum, denom

        (loss_sum, denom), grad = jax.value_and_grad(total, has_aux=True)(batch["logp"])
        return loss_sum, denom, grad

    full_sum, full_denom, full_grad = sum_and_grad(batch)
    parts = [sum_and_grad(mb) for mb in split_micro_batches(batch, 4)]
    acc_sum = sum(p[0] for p in parts)
    acc_denom = sum(p[1] for p in parts)
    acc_grad = jnp.concatenate([p[2] for p in parts]) / acc_denom
    np.testing.assert_allclose(acc_denom, full_denom, rtol=0)
    np.testing.assert_allclose(acc_sum / acc_denom, full_sum / full_denom, rtol=1e-12)
    np.testing.assert_allclose(acc_grad, full_grad / full_denom, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_cross_device_reduction_equals_global_batch(x64, mode):
    batch = make_batch(seed=10, b=8, t=5, lengths=[5, 1, 3, 0, 2, 5, 4, 1])
    cfg = config(aggregation=mode)
    mesh = jax.make_mesh((4,), ("data",))
    spec = jax.tree.map(lambda _: P("data"), batch)

    def per_device(batch):
        loss_sum, denom, _ = POLICY_LOSSES.get("dppo_topk_kl")(batch, cfg)
        return jax.lax.psum(loss_sum, "data") / jax.lax.psum(denom, "data")

    sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec,), out_specs=P()))
    placed = jax.device_put(batch, jax.tree.map(lambda s: NamedSharding(mesh, s), spec))
    want = mean_loss("dppo_topk_kl", cfg)(batch)
    np.testing.assert_allclose(sharded(placed), want, rtol=1e-12)


def test_metrics_bundle_is_masked_and_consistent():
    batch = make_batch(seed=12, b=6, t=5, spread=1.0, lengths=[5, 2, 3, 1, 4, 0])
    padding = ~batch["response_mask"]
    garbage = {
        **batch,
        "logp": jnp.where(padding, 50.0, batch["logp"]),
        "old_logp": jnp.where(padding, -50.0, batch["old_logp"]),
        "entropy": jnp.where(padding, 1e6, batch["entropy"]),
    }
    cfg = config(delta_low=0.02, delta_high=0.02)
    for name in OWN_LOSSES:
        clean = run(name, cfg, batch)[2]
        dirty = run(name, cfg, garbage)[2]
        for key in clean:
            np.testing.assert_allclose(dirty[key], clean[key], rtol=1e-6, err_msg=f"{name}.{key}")
        np.testing.assert_allclose(
            float(clean["clip_frac_pos"]) + float(clean["clip_frac_neg"]),
            float(clean["clip_frac"]),
            rtol=1e-6,
        )
    metrics = run("dppo_binary_kl", cfg, batch)[2]
    valid = np.asarray(batch["response_mask"])
    r = np.asarray(ratio_of(batch))[valid]
    log_r = np.log(r)
    np.testing.assert_allclose(metrics["num_tokens"], valid.sum())
    np.testing.assert_allclose(metrics["ratio_mean"], r.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["ratio_min"], r.min(), rtol=1e-5)
    np.testing.assert_allclose(metrics["ratio_max"], r.max(), rtol=1e-5)
    np.testing.assert_allclose(metrics["abs_log_ratio_mean"], np.abs(log_r).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["approx_kl"], (r - 1 - log_r).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["entropy"], np.asarray(batch["entropy"])[valid].mean(), rtol=1e-5
    )
    d = np.asarray(dppo.binary_kl(batch["logp"], batch["old_logp"]))[valid]
    np.testing.assert_allclose(metrics["divergence_mean"], d.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["divergence_max"], d.max(), rtol=1e-5)
    adv = np.broadcast_to(np.asarray(batch["advantages"])[:, None], valid.shape)[valid]
    kept = np.asarray(
        dppo.mask(
            dppo.binary_kl(batch["logp"], batch["old_logp"]),
            batch["logp"],
            batch["old_logp"],
            batch["advantages"],
            batch["response_mask"],
            0.02,
            0.02,
        )
    )[valid]
    np.testing.assert_allclose(
        metrics["clip_frac_pos"], ((kept == 0) & (adv > 0)).mean(), rtol=1e-6
    )
    assert float(metrics["clip_frac"]) > 0


def test_reference_kl_term(x64):
    batch = make_batch(seed=12, b=4, t=3, lengths=[3, 3, 2, 1])
    base = run("clip", config(), batch)
    valid = batch["response_mask"]
    log_r = batch["ref_logp"] - batch["logp"]
    expected = {
        "k1": -log_r,
        "k3": jnp.exp(log_r) - 1 - log_r,
    }
    for estimator, per_token in expected.items():
        with_kl = run("clip", config(kl_coef=0.5, kl_estimator=estimator), batch)
        extra = 0.5 * jnp.where(valid, per_token, 0).sum()
        np.testing.assert_allclose(with_kl[0] - base[0], extra, rtol=1e-10)
        np.testing.assert_allclose(
            with_kl[2]["kl_ref"], jnp.where(valid, per_token, 0).sum() / valid.sum(), rtol=1e-6
        )
    assert "kl_ref" not in base[2]
    no_ref = {k: v for k, v in batch.items() if k != "ref_logp"}
    losses.clip_loss(no_ref, config())  # off by default: the reference is not needed
    with pytest.raises(KeyError, match="ref_logp"):
        losses.clip_loss(no_ref, config(kl_coef=0.1))
    with pytest.raises(ValueError, match="k1, k3"):
        losses.clip_loss(batch, config(kl_coef=0.1, kl_estimator="k2"))


def test_token_level_advantages_are_accepted(x64):
    batch = make_batch(seed=13)
    per_token = {**batch, "advantages": jnp.broadcast_to(batch["advantages"][:, None], (8, 5))}
    for name in ["clip", "gspo", "cispo", "dppo_topk_kl"]:
        got = run(name, config(), per_token)[0]
        np.testing.assert_allclose(got, run(name, config(), batch)[0], rtol=1e-12)
