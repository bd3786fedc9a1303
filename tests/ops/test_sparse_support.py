"""sparse_support against a dense, token-by-token reference of specs/troll.md section 3."""

import functools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import LOG_FLOOR, kept_mask, sparse_support

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import troll_reference as ref  # noqa: E402


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _distributions(rng, n, vocab):
    """n (new, old) full-vocabulary log-prob pairs: peaked, flat, close and far apart."""
    new, old = np.empty((n, vocab)), np.empty((n, vocab))
    for i in range(n):
        scale = rng.choice([0.5, 2.0, 5.0])
        lo = rng.normal(0, scale, vocab)
        lo[rng.integers(vocab)] += rng.choice([0.0, 8.0])
        ln = lo + rng.normal(0, rng.choice([0.05, 0.5, 3.0]), vocab)
        old[i], new[i] = lo - np.logaddexp.reduce(lo), ln - np.logaddexp.reduce(ln)
    return new, old


def _topk(logp, k, shuffle=None):
    ids = np.argsort(-logp, axis=-1, kind="stable")[:, :k]
    if shuffle is not None:  # the builder must not depend on the column order
        ids = np.take_along_axis(
            ids, shuffle.permuted(np.tile(np.arange(k), (len(ids), 1)), axis=-1), axis=-1
        )
    return ids.astype(np.int32), np.take_along_axis(logp, ids, axis=-1)


def _inputs(rng, n, vocab, k, shuffle=False):
    new, old = _distributions(rng, n, vocab)
    # Sampled tokens: mostly likely ones, sometimes anything (then often outside both top-Ks).
    likely = np.argmax(new + rng.gumbel(size=new.shape), axis=-1)
    sampled = np.where(rng.random(n) < 0.7, likely, rng.integers(0, vocab, n)).astype(np.int32)
    perm = rng if shuffle else None
    n_ids, n_lp = _topk(new, k, perm)
    o_ids, o_lp = _topk(old, k, perm)
    rows = np.arange(n)
    return dict(
        new=new,
        old=old,
        sampled=sampled,
        n_ids=n_ids,
        n_lp=n_lp,
        o_ids=o_ids,
        o_lp=o_lp,
        n_at_o=new[rows[:, None], o_ids],
        n_s=new[rows, sampled],
        o_s=old[rows, sampled],
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _build_jit(x, vocab, k, delta, union):
    return sparse_support(
        x["n_ids"],
        x["n_lp"],
        x["o_ids"],
        x["o_lp"],
        x["sampled"],
        x["n_s"],
        x["o_s"],
        vocab,
        k=k,
        delta=delta,
        new_logp_at_old_topk=x["n_at_o"],
        new_logp_on_union=union,
    )


def _build(x, vocab, k, delta, union=False):
    return _build_jit(x, vocab, k, delta, union)


def _slot_ids(x):
    n = len(x["sampled"])
    return np.concatenate([x["n_ids"], x["o_ids"], x["sampled"][:, None], -np.ones((n, 1), int)], 1)


@jax.jit
def _project_padded(a, b, valid, eps):
    return kl_projection(a, b, valid, eps)


def _project(a, b, valid, eps, slots=320):
    """kl_projection with the slot axis padded (masked) to one width: one compilation."""
    pad = ((0, 0), (0, slots - a.shape[-1]))
    logp, info = _project_padded(np.pad(a, pad), np.pad(b, pad), np.pad(valid, pad), eps)
    return logp[:, : a.shape[-1]], info


SETTINGS = [
    # vocab, k, delta
    (50, 8, 1e-5),
    (50, 8, 0.05),
    (300, 16, 1e-5),
    (300, 4, 0.3),
    (12, 12, 1e-5),  # k = V: both top-Ks are the whole vocabulary
]


@pytest.mark.parametrize("vocab,k,delta", SETTINGS)
@pytest.mark.parametrize("union", [False, True])
def test_slots_match_dense_reference(x64, vocab, k, delta, union):
    rng = np.random.default_rng(vocab + k)
    x = _inputs(rng, 64, vocab, k, shuffle=True)
    sup = _build(x, vocab, k, delta, union)
    a, b, valid = (np.asarray(v) for v in sup[:3])
    assert (np.asarray(sup.sampled_slot) == 2 * k).all()
    ids = _slot_ids(x)
    for i in range(len(ids)):
        new, old, union_set = ref.support_dense(
            x["new"][i], x["old"][i], x["sampled"][i], k, delta, union
        )
        token_slots = valid[i, :-1]
        tokens = ids[i, :-1][token_slots]
        # Every token of U sits in exactly one valid slot; nothing else does.
        assert sorted(tokens.tolist()) == sorted(union_set)
        assert valid[i, 2 * k] and ids[i, 2 * k] == x["sampled"][i]
        np.testing.assert_allclose(a[i, :-1][token_slots], new[tokens], atol=1e-12)
        np.testing.assert_allclose(b[i, :-1][token_slots], old[tokens], atol=1e-12)
        tail = np.setdiff1d(np.arange(vocab), tokens)
        assert valid[i, -1] == (len(tail) > 0)
        if len(tail):
            np.testing.assert_allclose(a[i, -1], np.logaddexp.reduce(new[tail]), atol=1e-12)
            np.testing.assert_allclose(b[i, -1], np.logaddexp.reduce(old[tail]), atol=1e-12)
            np.testing.assert_allclose(np.exp(new[tail]), np.exp(new[tail[0]]), rtol=1e-12)
        # The slot distributions are the full sparse vectors, lumped: they sum to one.
        np.testing.assert_allclose(np.exp(a[i][valid[i]]).sum(), 1, atol=1e-12)
        np.testing.assert_allclose(np.exp(b[i][valid[i]]).sum(), 1, atol=1e-12)


@pytest.mark.parametrize("vocab,k,delta", SETTINGS)
def test_projection_on_support_equals_dense_projection(x64, vocab, k, delta):
    rng = np.random.default_rng(2 * vocab + k)
    x = _inputs(rng, 32, vocab, k)
    sup = _build(x, vocab, k, delta)
    dense = [
        ref.support_dense(x["new"][i], x["old"][i], x["sampled"][i], k, delta) for i in range(32)
    ]
    dense_new = np.stack([d[0] for d in dense])
    dense_old = np.stack([d[1] for d in dense])
    for eps in (0.01, 0.05, 0.25):
        lp_s, info_s = _project(sup.a, sup.b, sup.valid, eps)
        lp_d, info_d = _project(dense_new, dense_old, np.ones(dense_new.shape, bool), eps)
        lp_s, lp_d = np.asarray(lp_s), np.asarray(lp_d)
        assert np.asarray(info_d.active).any()
        # Identical problems, solved separately: equal to the solver's tolerance (~1e-9).
        np.testing.assert_array_equal(info_s.active, info_d.active)
        np.testing.assert_allclose(info_s.kl_before, info_d.kl_before, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(info_s.eta, info_d.eta, rtol=1e-7)
        np.testing.assert_allclose(info_s.kl_after, info_d.kl_after, rtol=1e-8, atol=1e-13)
        ids, valid = _slot_ids(x), np.asarray(sup.valid)
        for i in range(32):
            tokens = ids[i, :-1][valid[i, :-1]]
            np.testing.assert_allclose(
                np.asarray(lp_s[i, :-1])[valid[i, :-1]], np.asarray(lp_d[i])[tokens], atol=1e-9
            )
            tail = np.setdiff1d(np.arange(vocab), tokens)
            if len(tail):
                np.testing.assert_allclose(
                    lp_s[i, -1], np.logaddexp.reduce(lp_d[i][tail]), atol=1e-9
                )


def test_k_is_clamped_to_the_vocabulary(x64):
    rng = np.random.default_rng(3)
    x = _inputs(rng, 16, 12, 12)
    small, big = _build(x, 12, 12, 1e-5), _build(x, 12, 1000, 1e-5)
    for u, v in zip(small, big, strict=True):
        np.testing.assert_array_equal(u, v)
    # With delta = 0 every token of a flat enough distribution is kept: the tail slot is empty.
    flat = np.log(rng.dirichlet(np.ones(12), (2, 16)))
    ids = np.tile(np.arange(12, dtype=np.int32), (16, 1))
    rows = np.arange(16)
    sup = sparse_support(
        ids,
        flat[0],
        ids,
        flat[1],
        rows % 12,
        flat[0, rows, rows % 12],
        flat[1, rows, rows % 12],
        12,
        k=1000,
        delta=0.0,
    )
    assert not np.asarray(sup.valid[:, -1]).any()
    assert (np.asarray(sup.valid).sum(-1) == 12).all()


def test_duplicates_count_once(x64):
    """Same ids in both top-Ks (in another order) and a sampled token inside both."""
    vocab, k = 20, 5
    new = np.log(np.r_[[0.3, 0.25, 0.2, 0.15, 0.09], np.full(15, 0.01 / 15)])
    old = np.log(np.r_[[0.1, 0.2, 0.3, 0.25, 0.14], np.full(15, 0.01 / 15)])
    n_ids = np.array([0, 1, 2, 3, 4])
    o_ids = np.array([2, 3, 1, 4, 0])
    x = dict(
        n_ids=n_ids[None],
        n_lp=new[n_ids][None],
        o_ids=o_ids[None],
        o_lp=old[o_ids][None],
        sampled=np.array([1]),
        n_s=new[[1]],
        o_s=old[[1]],
        n_at_o=new[o_ids][None],
    )
    sup = _build(x, vocab, k, 1e-5)
    valid = np.asarray(sup.valid[0])
    # Sampled slot + the other four new-block slots + the tail; no old-block slot.
    np.testing.assert_array_equal(valid, [1, 0, 1, 1, 1] + [0] * 5 + [1, 1])
    # Every token of both top-5s is kept (their mass is below 1 - delta); 15 floors in the tail.
    log_z = math.log(0.99 + 15e-12)
    np.testing.assert_allclose(sup.a[0, -1], math.log(15) + LOG_FLOOR - log_z, atol=1e-12)
    np.testing.assert_allclose(np.exp(sup.b[0, 2]), 0.3 / 0.99, rtol=1e-9)  # old's token 2


def test_kept_mask_rule():
    logp = np.log([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    np.testing.assert_array_equal(kept_mask(logp, 4, 0.1), [[1, 1, 1, 0], [0, 1, 1, 1]])
    np.testing.assert_array_equal(kept_mask(logp, 2, 0.0), [[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(kept_mask(logp, 4, 0.6), [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_gradients_reach_the_new_policy_only_where_it_counts(x64):
    rng = np.random.default_rng(8)
    x = _inputs(rng, 8, 50, 8)
    w = rng.normal(size=(8, 18))

    def f(n_lp, n_s, n_at_o, union):
        y = dict(x, n_lp=n_lp, n_s=n_s, n_at_o=n_at_o)
        sup = _build(y, 50, 8, 0.05, union)
        return jnp.sum(jnp.where(sup.valid, sup.a * w, 0.0))

    for union in (False, True):
        g_lp, g_s, g_at_o = jax.grad(f, argnums=(0, 1, 2))(x["n_lp"], x["n_s"], x["n_at_o"], union)
        kept = np.asarray(kept_mask(x["n_lp"], 8, 0.05))
        assert np.isfinite(g_lp).all() and (np.abs(g_s) > 0).all()
        if not union:
            # Floored tokens carry no gradient; neither do the new log-probs at old ids.
            assert (np.asarray(g_lp)[~kept] == 0).all()
            assert (np.asarray(g_at_o) == 0).all()
        else:
            assert (np.asarray(g_at_o) != 0).any()


def test_padding_dummies_and_traced_vocab():
    zeros = jnp.zeros((3, 4))
    ids = jnp.zeros((3, 4), jnp.int32)
    sup = jax.jit(
        lambda v: sparse_support(
            ids, zeros, ids, zeros, ids[:, 0], zeros[:, 0], zeros[:, 0], v, k=4, delta=1e-5
        )
    )(jnp.int32(10))
    for x in sup[:2]:
        assert np.isfinite(np.asarray(x)).all()
    static = sparse_support(
        ids, zeros, ids, zeros, ids[:, 0], zeros[:, 0], zeros[:, 0], 10, k=4, delta=1e-5
    )
    for u, v in zip(sup, static, strict=True):
        np.testing.assert_array_equal(u, v)


def test_union_option_needs_the_gathered_logprobs():
    z = jnp.zeros((1, 2))
    i = jnp.zeros((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="new_logp_at_old_topk"):
        sparse_support(i, z, i, z, i[:, 0], z[:, 0], z[:, 0], 5, new_logp_on_union=True)
