"""kl_projection against the spec's worked vector and an independent float64 Brent reference."""

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trlx_jax.ops.projection import ETA_MAX, kl_projection

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import troll_reference as ref  # noqa: E402

OLD = np.log([0.7, 0.2, 0.1])
NEW = np.log([0.1, 0.2, 0.7])


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _rows(rng, n, size, scale, keep, move):
    """n rows of `size` slots: new ~ N(0, scale), old = new + N(0, move) or independent."""
    a = rng.normal(0, scale, (n, size))
    if move is None:
        b = rng.normal(0, scale, (n, size))
    else:
        b = a + rng.normal(0, move, (n, size))
    valid = rng.random((n, size)) < keep
    valid[np.arange(n), rng.integers(0, size, n)] = True
    return a, b, valid


def _sparse_like(rng, n, size):
    """Rows shaped like the sparse support: a few kept values, floors, a lumped tail slot."""
    a = np.full((n, size), ref.LOG_FLOOR)
    b = np.full((n, size), ref.LOG_FLOOR)
    for i in range(n):
        kn, ko = rng.integers(1, 12, 2)
        shift = rng.integers(0, kn)
        a[i, :kn] = rng.normal(0, 3, kn)
        b[i, shift : shift + ko] = rng.normal(0, 3, ko)
        b[i, 0] = a[i, 0] + rng.normal(0, 0.5)  # the sampled token, kept by both
    a[:, -1] = b[:, -1] = ref.LOG_FLOOR + math.log(150_000)
    return a, b, np.ones((n, size), bool)


# Every random case is padded into these shapes (masked slots), so one compilation serves all.
ROWS, SLOTS = 48, 130


def _pad(a, b, valid):
    n, size = a.shape
    out = [np.zeros((ROWS, SLOTS)), np.zeros((ROWS, SLOTS)), np.zeros((ROWS, SLOTS), bool)]
    for dst, src in zip(out, (a, b, valid), strict=True):
        dst[:n, :size] = src
    return out


@jax.jit
def _project_padded(a, b, valid, eps):
    return kl_projection(a, b, valid, eps)


@jax.jit
def _vjp_padded(a, b, valid, eps, g):
    def f(a, b, eps):
        return jnp.sum(kl_projection(a, b, valid, eps)[0] * g)

    return jax.grad(f, argnums=(0, 1, 2))(a, b, eps)


def _project(a, b, valid, eps):
    """kl_projection of rows [n <= ROWS, size <= SLOTS] through the shared compiled shape."""
    n, size = a.shape
    eps = np.broadcast_to(np.asarray(eps, a.dtype), (n,))
    eps_pad = np.full(ROWS, 0.05, a.dtype)
    eps_pad[:n] = eps
    pa, pb, pv = _pad(a, b, valid)
    logp, info = _project_padded(pa.astype(a.dtype), pb.astype(a.dtype), pv, eps_pad)
    return logp[:n, :size], jax.tree.map(lambda x: x[:n], info)


def _vjp(a, b, valid, eps, g, wrt="a"):
    """g^T d logp / d (a | b | eps) through the shared compiled shape."""
    n, size = a.shape
    eps_pad = np.full(ROWS, 0.05, a.dtype)
    eps_pad[:n] = np.broadcast_to(eps, (n,))
    pa, pb, pv = _pad(a, b, valid)
    pg = np.zeros((ROWS, SLOTS), a.dtype)
    pg[:n, :size] = g
    grads = _vjp_padded(pa.astype(a.dtype), pb.astype(a.dtype), pv, eps_pad, pg)
    if wrt == "eps":
        return grads[2][:n]
    return grads[{"a": 0, "b": 1}[wrt]][:n, :size]


def _jac(a, b, valid, eps):
    """[size] row -> the [size, size] Jacobian d logp_i / d a_k, via one batched VJP."""
    size = len(a)
    tile = lambda x: np.tile(x, (size, 1))
    return np.asarray(_vjp(tile(a), tile(b), tile(valid), eps, np.eye(size)))


# ---------------------------------------------------------------- the spec's worked vector


def test_worked_vector(x64):
    logp, info = _project(NEW[None], OLD[None], np.ones((1, 3), bool), 0.05)
    assert logp.dtype == jnp.float64
    np.testing.assert_allclose(info.kl_before, [1.1675460894], atol=1e-10)
    np.testing.assert_allclose(info.eta, [3.5885138707], atol=1e-8)
    np.testing.assert_allclose(np.exp(logp[0]), [0.56489261, 0.24664636, 0.18846103], atol=1e-8)
    np.testing.assert_allclose(info.kl_after, [0.05], atol=1e-10)
    assert bool(info.active[0]) and float(info.violation[0]) == 0.0
    jac = _jac(NEW, OLD, np.ones(3, bool), 0.05)
    np.testing.assert_allclose(jac[2], [0.04964363, -0.09928725, 0.04964363], atol=1e-8)
    # The same through the public function directly, unpadded and un-jitted.
    direct, _ = kl_projection(NEW, OLD, np.ones(3, bool), 0.05)
    np.testing.assert_allclose(direct, logp[0], atol=1e-12)


def test_worked_vector_inactive(x64):
    new = np.log([0.68, 0.21, 0.11])
    logp, info = _project(new[None], OLD[None], np.ones((1, 3), bool), 0.05)
    np.testing.assert_allclose(info.kl_before, [0.001019], atol=1e-6)
    assert not bool(info.active[0]) and float(info.eta[0]) == 0.0
    np.testing.assert_allclose(logp[0], new, atol=1e-15)
    np.testing.assert_allclose(
        _jac(new, OLD, np.ones(3, bool), 0.05), np.eye(3) - np.exp(new), atol=1e-14
    )


def test_eta_term_matters(x64):
    """Treating eta as a constant (dropping the implicit term) gives a different gradient."""
    logp, info = _project(NEW[None], OLD[None], np.ones((1, 3), bool), 0.05)
    fixed_eta = (np.eye(3) - np.exp(np.asarray(logp[0]))) / (1 + float(info.eta[0]))
    assert np.abs(_jac(NEW, OLD, np.ones(3, bool), 0.05) - fixed_eta).max() > 0.05


# ---------------------------------------------------------------- against the reference


CASES = [
    # size, scale, keep, move, eps
    (2, 1.0, 1.0, None, 0.05),
    (3, 3.0, 1.0, 1.0, 0.01),
    (5, 0.3, 0.8, None, 0.001),
    (17, 1.0, 0.7, 0.5, 0.05),
    (17, 10.0, 0.9, None, 0.25),
    (64, 3.0, 0.5, 2.0, 1.0),
    (130, 1.0, 1.0, 0.5, 0.05),
    (130, 5.0, 0.9, None, 0.05),
]


@pytest.mark.parametrize("size,scale,keep,move,eps", CASES)
def test_values_vs_reference_float64(x64, size, scale, keep, move, eps):
    rng = np.random.default_rng(size * 1000 + int(scale * 10))
    a, b, valid = _rows(rng, ROWS, size, scale, keep, move)
    want = ref.project(a, b, valid, eps)
    logp, info = _project(a, b, valid, eps)
    assert (want["eta"] > 0).sum() > ROWS // 4, "the case should exercise the projection"
    np.testing.assert_allclose(
        np.where(valid, np.exp(logp), 0), np.exp(want["logp"]) * valid, atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(np.where(valid, logp, 0), want["logp"], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(info.eta, want["eta"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(info.kl_before, want["kl_before"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(info.kl_after, want["kl_after"], rtol=1e-6, atol=1e-9)
    assert np.all(np.asarray(info.kl_after) <= eps + 1e-12)


def test_values_vs_reference_sparse_like_float64(x64):
    rng = np.random.default_rng(7)
    for _ in range(4):
        a, b, valid = _sparse_like(rng, ROWS, SLOTS)
        eps = rng.choice([0.01, 0.05, 0.25], len(a))
        want = ref.project(a, b, valid, eps)
        logp, info = _project(a, b, valid, eps)
        np.testing.assert_allclose(np.exp(logp), np.exp(want["logp"]), atol=1e-6, rtol=0)
        big = want["logp"] > -30
        np.testing.assert_allclose(np.asarray(logp)[big], want["logp"][big], atol=1e-6)
        np.testing.assert_allclose(info.eta, want["eta"], rtol=1e-6)


@pytest.mark.parametrize("size,scale,keep,move,eps", CASES)
def test_vjp_vs_finite_differences_float64(x64, size, scale, keep, move, eps):
    rng = np.random.default_rng(size * 7 + 1)
    rows = 6 if size <= 17 else 2
    a, b, valid = _rows(rng, 4 * rows, size, scale, keep, move)
    want = ref.project(a, b, valid, eps)
    # Rows with an interior root (the reference derivative is then the implicit one).
    pick = np.flatnonzero((want["eta"] > 1e-6) & (want["eta"] < ETA_MAX))[:rows]
    pick = np.concatenate([pick, np.flatnonzero(want["eta"] == 0)[:1]])
    g = rng.normal(size=(len(pick), size))
    got = np.asarray(_vjp(a[pick], b[pick], valid[pick], eps, g))
    for i, row in enumerate(pick):
        fd = ref.vjp_row(a[row], b[row], valid[row], eps, g[i])
        assert np.linalg.norm(got[i] - fd) <= 1e-5 * np.linalg.norm(fd) + 1e-9, (i, got[i], fd)


def test_vjp_wrt_old_and_eps_vs_finite_differences(x64):
    rng = np.random.default_rng(3)
    a, b, valid = _rows(rng, 12, 9, 2.0, 1.0, 1.0)
    want = ref.project(a, b, valid, 0.05)
    active = np.flatnonzero(want["eta"] > 0)[:6]
    assert len(active) == 6
    a, b, valid = a[active], b[active], valid[active]
    g = rng.normal(size=a.shape)
    got_b = np.asarray(_vjp(a, b, valid, 0.05, g, wrt="b"))
    got_eps = np.asarray(_vjp(a, b, valid, 0.05, g, wrt="eps"))
    h = 1e-6
    for i in range(len(a)):
        fd = ref.vjp_row(a[i], b[i], valid[i], 0.05, g[i], wrt="b")
        assert np.linalg.norm(got_b[i] - fd) <= 1e-5 * np.linalg.norm(fd)
        up = ref.project_row(a[i], b[i], valid[i], 0.05 + h)["logp"]
        down = ref.project_row(a[i], b[i], valid[i], 0.05 - h)["logp"]
        np.testing.assert_allclose(got_eps[i], np.sum(g[i] * (up - down)) / (2 * h), rtol=1e-5)


def test_eta_capped_uses_fixed_eta_jacobian(x64):
    """KL(p_eta || old) > eps even at eta = ETA_MAX: eta stays there, the violation is reported
    and the map is the fixed-eta mixture, whose derivative the reference differences see."""
    rng = np.random.default_rng(11)
    a, b, valid = _rows(rng, 3, 6, 3.0, 1.0, None)
    eps = 1e-7
    want = ref.project(a, b, valid, eps)
    assert (want["eta"] == ETA_MAX).all()
    logp, info = _project(a, b, valid, eps)
    np.testing.assert_allclose(info.eta, ETA_MAX)
    np.testing.assert_allclose(logp, want["logp"], atol=1e-10)
    assert (np.asarray(info.violation) > 0).all()
    g = rng.normal(size=a.shape)
    got = np.asarray(_vjp(a, b, valid, eps, g))
    for i in range(len(a)):
        np.testing.assert_allclose(got[i], ref.vjp_row(a[i], b[i], valid[i], eps, g[i]), atol=1e-7)


@pytest.mark.parametrize("kind", ["random", "sparse"])
def test_float32_vs_reference(kind):
    rng = np.random.default_rng(5)
    for _ in range(4):
        if kind == "random":
            a, b, valid = _rows(rng, ROWS, 40, 2.0, 0.9, 1.0)
        else:
            a, b, valid = _sparse_like(rng, ROWS, SLOTS)
        eps = rng.choice([0.01, 0.05, 0.25], ROWS)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        want = ref.project(a32.astype(np.float64), b32.astype(np.float64), valid, eps)
        logp, info = _project(a32, b32, valid, eps.astype(np.float32))
        assert logp.dtype == jnp.float32
        np.testing.assert_allclose(
            np.where(valid, np.exp(logp), 0), np.exp(want["logp"]) * valid, atol=1e-4, rtol=0
        )
        inside = want["eta"] < ETA_MAX
        assert np.all(np.asarray(info.kl_after)[inside] <= eps[inside] + 1e-5)
    rows = np.flatnonzero((want["eta"] > 0) & (want["eta"] < ETA_MAX))[:4]
    g = rng.normal(size=(len(rows), a.shape[1])).astype(np.float32)
    got = np.asarray(_vjp(a32[rows], b32[rows], valid[rows], eps[rows].astype(np.float32), g))
    for i, row in enumerate(rows):
        fd = ref.vjp_row(
            a32[row].astype(np.float64),
            b32[row].astype(np.float64),
            valid[row],
            eps[row],
            g[i].astype(np.float64),
        )
        assert np.linalg.norm(got[i] - fd) <= 1e-4 * np.linalg.norm(fd) + 1e-6


# ---------------------------------------------------------------- invariants


def test_gradient_sums_to_zero_and_keeps_kl_when_active(x64):
    rng = np.random.default_rng(2)
    a, b, valid = _rows(rng, 8, 12, 2.0, 1.0, None)
    logp, info = _project(a, b, valid, 0.05)
    assert np.asarray(info.active).sum() >= 4
    for i in range(len(a)):
        jac = _jac(a[i], b[i], valid[i], 0.05)[np.ix_(valid[i], valid[i])]
        lp = np.asarray(logp[i])[valid[i]]
        np.testing.assert_allclose(jac.sum(axis=1), 0, atol=1e-10)  # sum_k d logp_i / d a_k
        p = np.exp(lp)
        np.testing.assert_allclose(p @ jac, 0, atol=1e-10)  # normalization is preserved
        if bool(info.active[i]):
            lb = b[i][valid[i]] - np.log(np.exp(b[i][valid[i]]).sum())
            np.testing.assert_allclose((p * (lp - lb)) @ jac, 0, atol=1e-9)  # KL stays eps


def test_identity_when_inactive(x64):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 7))
    b = a + rng.normal(0, 0.01, a.shape) + 3.0  # shifted: unnormalized inputs are fine
    valid = np.ones(a.shape, bool)
    logp, info = _project(a, b, valid, 0.05)
    assert not np.asarray(info.active).any()
    np.testing.assert_allclose(logp, a - np.log(np.exp(a).sum(-1, keepdims=True)), atol=1e-13)
    g = rng.normal(size=a.shape)
    np.testing.assert_allclose(_vjp(a, b, valid, 0.05, g, wrt="b"), 0, atol=0)
    for i in range(len(a)):
        p = np.exp(np.asarray(logp[i]))
        np.testing.assert_allclose(_jac(a[i], b[i], valid[i], 0.05), np.eye(7) - p, atol=1e-13)


def test_identical_policies_zero_variance(x64):
    a = np.log([0.5, 0.25, 0.25, 1e-30])
    logp, info = _project(a[None], a[None] + 2.0, np.ones((1, 4), bool), 0.05)
    np.testing.assert_allclose(logp[0], a, atol=1e-14)
    assert float(info.kl_before[0]) == pytest.approx(0, abs=1e-15)
    assert np.isfinite(_jac(a, a, np.ones(4, bool), 0.05)).all()


def test_lumped_tail_equals_explicit_tail(x64):
    rng = np.random.default_rng(9)
    kept, tail = 6, 40
    a_kept, b_kept = rng.normal(0, 2, kept), rng.normal(0, 2, kept)
    fa, fb = ref.LOG_FLOOR, ref.LOG_FLOOR - 1.0
    a_exp = np.concatenate([a_kept, np.full(tail, fa)])[None]
    b_exp = np.concatenate([b_kept, np.full(tail, fb)])[None]
    a_lump = np.concatenate([a_kept, [fa + math.log(tail)]])[None]
    b_lump = np.concatenate([b_kept, [fb + math.log(tail)]])[None]
    for eps in (0.01, 0.3):
        lp_e, info_e = _project(a_exp, b_exp, np.ones(a_exp.shape, bool), eps)
        lp_l, info_l = _project(a_lump, b_lump, np.ones(a_lump.shape, bool), eps)
        assert bool(info_e.active[0])
        np.testing.assert_allclose(lp_l[0, :kept], lp_e[0, :kept], atol=1e-10)
        np.testing.assert_allclose(lp_l[0, kept] - math.log(tail), lp_e[0, kept:], atol=1e-10)
        for field in ("eta", "kl_before", "kl_after"):
            np.testing.assert_allclose(getattr(info_l, field), getattr(info_e, field), rtol=1e-8)
        # Gradients: the lumped slot receives the sum of the explicit tail slots' gradients.
        g = rng.normal(size=(1, kept + tail))
        g_lump = np.concatenate([g[:, :kept], g[:, kept:].sum(-1, keepdims=True)], axis=-1)
        ge = _vjp(a_exp, b_exp, np.ones(a_exp.shape, bool), eps, g)[0]
        gl = _vjp(a_lump, b_lump, np.ones(a_lump.shape, bool), eps, g_lump)[0]
        np.testing.assert_allclose(gl[:kept], ge[:kept], atol=1e-9)
        np.testing.assert_allclose(gl[kept], ge[kept:].sum(), atol=1e-9)


def test_masked_slots_and_rows_are_inert(x64):
    rng = np.random.default_rng(6)
    a, b, valid = _rows(rng, 4, 10, 3.0, 0.6, None)
    valid[1] = False  # a fully masked row
    garbage = np.where(valid, 0.0, np.nan)  # masked slots may hold anything, even NaN
    logp, info = _project(a + garbage, b + garbage, valid, 0.05)
    assert np.isfinite(logp).all() and (np.asarray(logp)[~valid] == 0).all()
    assert float(info.eta[1]) == 0 and float(info.kl_before[1]) == 0
    g = rng.normal(size=a.shape)
    for wrt in ("a", "b"):
        grad = np.asarray(_vjp(a + garbage, b + garbage, valid, 0.05, g, wrt=wrt))
        assert np.isfinite(grad).all() and (grad[~valid] == 0).all()
    # The valid part equals the projection of the valid slots alone.
    want = ref.project(a, b, valid, 0.05)
    np.testing.assert_allclose(np.where(valid, logp, 0), want["logp"], atol=1e-8)


def test_infinite_inputs_stay_finite(x64):
    a = np.array([[0.0, -np.inf, -1.0, -2.0], [-np.inf] * 4, [0.0, 0.0, -np.inf, 1.0]])
    b = np.array([[-np.inf, 0.0, -1.0, -3.0], [0.0, 1.0, 2.0, 3.0], [-1.0, -np.inf, 0.0, 0.0]])
    valid = np.ones(a.shape, bool)
    logp, info = _project(a, b, valid, 0.05)
    for x in (logp, *info):
        assert np.isfinite(np.asarray(x, np.float64)).all()
    g = np.eye(4)[[0, 1, 3]]
    for wrt in ("a", "b"):
        assert np.isfinite(_vjp(a, b, valid, 0.05, g, wrt=wrt)).all()


def test_low_precision_inputs_are_computed_in_float32():
    a, b = np.log([0.1, 0.2, 0.7]), np.log([0.7, 0.2, 0.1])
    logp, info = jax.jit(kl_projection)(
        jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16), True, 0.05
    )
    assert logp.dtype == jnp.float32 and info.eta.dtype == jnp.float32
    assert info.active.dtype == bool and bool(info.active)
    np.testing.assert_allclose(np.exp(logp), [0.56489261, 0.24664636, 0.18846103], atol=1e-2)


# ---------------------------------------------------------------- transformations, sharding


def test_vmap_and_leading_axes_agree(x64):
    rng = np.random.default_rng(12)
    a, b, valid = _pad(*_rows(rng, ROWS, 11, 2.0, 0.9, None))
    eps = np.linspace(0.01, 0.3, ROWS)
    g = rng.normal(size=a.shape)
    batched = _project_padded(a, b, valid, eps)
    grad = _vjp_padded(a, b, valid, eps, g)[0]

    @jax.jit
    def mapped(a, b, valid, eps, g):
        def one(a, b, valid, eps, g):
            out, vjp = jax.vjp(lambda x: kl_projection(x, b, valid, eps), a)
            return out, vjp((g, jax.tree.map(jnp.zeros_like, out[1])))[0]

        return jax.vmap(one)(a, b, valid, eps, g)

    (logp, info), grad_mapped = mapped(a, b, valid, eps, g)
    for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves((logp, info)), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-12)
    np.testing.assert_allclose(grad_mapped, grad, atol=1e-12)
    # Extra leading axes are batch axes.
    shape = (4, ROWS // 4, SLOTS)
    logp3, _ = jax.jit(kl_projection)(
        a.reshape(shape), b.reshape(shape), valid.reshape(shape), eps.reshape(shape[:2])
    )
    np.testing.assert_allclose(logp3.reshape(ROWS, SLOTS), batched[0], atol=1e-12)


def test_sharded_inputs():
    devices = np.array(jax.devices())
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices")
    mesh = Mesh(devices, ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data", None))
    rng = np.random.default_rng(13)
    n = 4 * len(devices)
    a, b, valid = (
        x.astype(np.float32) if x.dtype != bool else x for x in _rows(rng, n, 20, 2.0, 0.9, None)
    )
    g = rng.normal(size=a.shape).astype(np.float32)

    def f(a, b, valid, g):
        logp, info = kl_projection(a, b, valid, 0.05)
        grad = jax.grad(lambda x: jnp.sum(kl_projection(x, b, valid, 0.05)[0] * g))(a)
        return logp, info.eta, grad

    want = jax.jit(f)(a, b, valid, g)
    args = [jax.device_put(x, sharding) for x in (a, b, valid, g)]
    got = jax.jit(
        f, out_shardings=(sharding, NamedSharding(mesh, PartitionSpec("data")), sharding)
    )(*args)
    assert got[0].sharding.is_equivalent_to(sharding, 2)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


# ---------------------------------------------------------------- stress


def _stress_rows(rng, n, size):
    """Mixed float32 rows: random, near one-hot (incl. swaps), floor-heavy sparse-like."""
    a, b, valid = _rows(rng, n, size, 3.0, 0.95, None)
    q = n // 4
    # Near one-hot, with the modes swapped between the policies in half of them.
    a[:q] = rng.normal(0, 1, (q, size)) - 30.0
    b[:q] = rng.normal(0, 1, (q, size)) - 30.0
    hot = rng.integers(0, size, (q, 2))
    a[np.arange(q), hot[:, 0]] = 0.0
    b[np.arange(q), np.where(np.arange(q) % 2 == 0, hot[:, 1], hot[:, 0])] = 0.0
    sa, sb, _ = _sparse_like(rng, q, size)
    a[q : 2 * q], b[q : 2 * q] = sa, sb
    valid[: 2 * q] = True
    return a.astype(np.float32), b.astype(np.float32), valid


def _stress(n):
    rng = np.random.default_rng(0)
    a, b, valid = _stress_rows(rng, n, SLOTS)
    eps = rng.choice(np.array([0.01, 0.05, 0.25], np.float32), n)
    g = rng.normal(size=(n, SLOTS)).astype(np.float32)

    @jax.jit
    def run(a, b, valid, eps, g):
        (logp, info), vjp = jax.vjp(lambda x: kl_projection(x, b, valid, eps), a)
        return logp, info, vjp((g, jax.tree.map(jnp.zeros_like, info)))[0]

    logp, info, grad = run(a, b, valid, eps, g)
    for x in (logp, grad, *info):
        assert np.isfinite(np.asarray(x, np.float64)).all()
    assert np.asarray(info.active).mean() > 0.5
    # Rows whose root lies at or beyond eta = ETA_MAX (floor-heavy rows whose new policy floors
    # tokens the old one weighs, at eps = 0.01) stop there and report any remaining violation;
    # the reference agrees.
    capped = np.asarray(info.eta) == np.float32(ETA_MAX)
    assert capped.mean() < 0.01
    violation = np.maximum(np.asarray(info.kl_after) - eps, 0)
    np.testing.assert_allclose(np.asarray(info.violation), violation, atol=1e-9)
    sample = np.flatnonzero(capped)[:8]
    if len(sample):
        want = ref.project(a[sample], b[sample], valid[sample], eps[sample])
        np.testing.assert_allclose(want["eta"], ETA_MAX)
        np.testing.assert_allclose(np.asarray(info.kl_after)[sample], want["kl_after"], rtol=1e-4)
    # Everywhere else KL(p || old) <= eps (up to float32 rounding of the KL itself), by the
    # solver's account and recomputed in float64 from the returned log-probs.
    ok = ~capped
    assert np.all(np.asarray(info.violation)[ok] <= 1e-6)
    lp = np.where(valid, np.asarray(logp, np.float64), -1e30)
    lp = lp - np.logaddexp.reduce(lp, axis=-1, keepdims=True)
    lb = np.where(valid, b.astype(np.float64), -1e30)
    lb = lb - np.logaddexp.reduce(lb, axis=-1, keepdims=True)
    kl = np.sum(np.where(valid, np.exp(lp) * (lp - lb), 0), axis=-1)
    assert np.all(kl[ok] <= eps[ok] + 1e-5), np.max(kl[ok] - eps[ok])


def test_stress_float32_100k_tokens():
    _stress(100_352)
