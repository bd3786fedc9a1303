"""The simplex geometry against the spec's worked vector and kl_projection."""

import jax.numpy as jnp
import numpy as np
import pytest

from trlx_jax.analysis import simplex
from trlx_jax.ops.projection import kl_projection

OLD = np.array([0.7, 0.2, 0.1])
NEW = np.array([0.1, 0.2, 0.7])
EPS = 0.05


def test_xy_round_trip_and_corners():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    xy = simplex.to_xy(p)
    np.testing.assert_allclose(xy[:3], simplex.CORNERS)
    np.testing.assert_allclose(simplex.from_xy(xy), p, atol=1e-12)


def test_kl_matches_definition_and_zero_terms():
    np.testing.assert_allclose(simplex.kl(NEW, OLD), 1.1675460894, rtol=1e-9)  # specs/troll.md
    assert simplex.kl(np.array([0.0, 0.5, 0.5]), OLD) == pytest.approx(
        0.5 * np.log(0.5 / 0.2) + 0.5 * np.log(0.5 / 0.1))


def test_eta_path_ends_and_spec_solution():
    path = simplex.eta_path(NEW, OLD, np.array([0.0, 1e9]))
    np.testing.assert_allclose(path[0], NEW, atol=1e-12)
    np.testing.assert_allclose(path[1], OLD, atol=1e-6)
    eta = simplex.solve_eta(NEW, OLD, EPS)
    assert eta == pytest.approx(3.5885138707, rel=1e-8)
    projected = simplex.eta_path(NEW, OLD, np.array([eta]))[0]
    np.testing.assert_allclose(projected, [0.56489261, 0.24664636, 0.18846103], atol=1e-8)


def test_solve_eta_agrees_with_kl_projection_and_is_zero_inside():
    logp, info = kl_projection(jnp.log(jnp.asarray(NEW)), jnp.log(jnp.asarray(OLD)),
                               jnp.ones(3, bool), EPS)
    np.testing.assert_allclose(np.exp(np.asarray(logp)),
                               simplex.eta_path(NEW, OLD, [simplex.solve_eta(NEW, OLD, EPS)])[0],
                               atol=3e-5)
    assert float(info.eta) == pytest.approx(simplex.solve_eta(NEW, OLD, EPS), rel=1e-3)
    assert simplex.solve_eta([0.68, 0.21, 0.11], OLD, EPS) == 0.0


def test_ball_boundary_is_on_the_level_set_or_an_edge():
    boundary = simplex.kl_ball_boundary(OLD, EPS)
    np.testing.assert_allclose(boundary[0], boundary[-1], atol=1e-12)
    np.testing.assert_allclose(boundary.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(simplex.kl(boundary, OLD), EPS, rtol=1e-9)
    # A ball wider than the simplex: points past an edge lie on it, inside the ball.
    wide = simplex.kl_ball_boundary(OLD, 1.0)
    on_edge = wide.min(-1) < 1e-12
    assert on_edge.any() and (simplex.kl(wide[on_edge], OLD) <= 1.0 + 1e-12).all()
    np.testing.assert_allclose(simplex.kl(wide[~on_edge], OLD), 1.0, rtol=1e-9)


def test_ball_boundary_rejects_bad_input():
    with pytest.raises(ValueError, match="3 positive probabilities"):
        simplex.kl_ball_boundary([0.5, 0.5, 0.0], EPS)
    with pytest.raises(ValueError, match="eps must be > 0"):
        simplex.kl_ball_boundary(OLD, 0.0)
