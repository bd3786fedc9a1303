"""The TROLL projection drawn on a 3-token simplex (specs/troll.md section 1), in numpy.

A distribution p over 3 tokens is a point of the triangle with corners e_0, e_1, e_2; its
plane coordinates are `to_xy(p)`. The trust region {p : KL(p || old) <= eps} is a convex
region around `old` whose boundary `kl_ball_boundary` traces; the projected point lies on the
geometric path `eta_path` from the new policy (eta = 0) to the old one (eta -> inf).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Corners of the triangle in the plane: token 0 bottom left, 1 bottom right, 2 top.
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]])
_BISECTIONS = 60


def to_xy(p: np.ndarray) -> np.ndarray:
    """[..., 3] probabilities -> [..., 2] plane coordinates (barycentric combination of CORNERS)."""
    return np.asarray(p, np.float64) @ CORNERS


def from_xy(xy: np.ndarray) -> np.ndarray:
    """[..., 2] plane coordinates -> [..., 3] barycentric coordinates (sum 1; may be negative
    outside the triangle)."""
    xy = np.asarray(xy, np.float64)
    # Solve xy = c + p1 (e1 - e0) + p2 (e2 - e0) with c = e0 = 0.
    basis = np.stack([CORNERS[1] - CORNERS[0], CORNERS[2] - CORNERS[0]], axis=1)
    p12 = np.linalg.solve(basis, (xy - CORNERS[0])[..., None])[..., 0]
    return np.concatenate([1.0 - p12.sum(-1, keepdims=True), p12], axis=-1)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) over the last axis, nats; terms with p = 0 count 0."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    ratio = np.log(np.where(p > 0, p, 1.0)) - np.log(np.where(p > 0, q, 1.0))
    return np.sum(np.where(p > 0, p * ratio, 0.0), axis=-1)


def eta_path(new: Sequence[float], old: Sequence[float], etas: np.ndarray) -> np.ndarray:
    """[3] new, [3] old probabilities, [E] eta >= 0 -> [E, 3] p_eta, the closed form
    log p_eta = z - logsumexp(z), z = (log new + eta log old) / (1 + eta)."""
    a = np.log(np.asarray(new, np.float64))
    b = np.log(np.asarray(old, np.float64))
    etas = np.asarray(etas, np.float64)[:, None]
    z = (a + etas * b) / (1.0 + etas)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _exit_distance(start: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[D, 3] barycentric directions (summing to 0) from `start` [3] (inside) -> [D] the step
    at which the ray leaves the triangle (first coordinate reaching 0)."""
    with np.errstate(divide="ignore"):
        steps = np.where(direction < 0, -start / direction, np.inf)
    return steps.min(axis=-1)


def kl_ball_boundary(old: Sequence[float], eps: float, points: int = 361) -> np.ndarray:
    """[points, 3] the boundary of {p : KL(p || old) <= eps} inside the simplex (a closed
    curve: first point = last), found by bisection along rays from `old` (KL is convex in p
    and 0 at old, so it increases along every ray). Where the ball reaches past an edge, the
    curve follows the edge."""
    old = np.asarray(old, np.float64)
    if old.shape != (3,) or np.any(old <= 0) or not np.isclose(old.sum(), 1.0):
        raise ValueError(f"old must be 3 positive probabilities summing to 1, got {old}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    angles = np.linspace(0.0, 2.0 * np.pi, points)
    ends = to_xy(old) + np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    direction = from_xy(ends) - old
    t_max = _exit_distance(old, direction)
    # Stop a hair inside the edge: on it a coordinate is exactly 0, which is fine for KL.
    at_edge = kl(old + t_max[:, None] * direction, old)
    lo = np.zeros_like(t_max)
    hi = t_max.copy()
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        inside = kl(old + mid[:, None] * direction, old) <= eps
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    t = np.where(at_edge <= eps, t_max, lo)
    boundary = old + t[:, None] * direction
    return np.clip(boundary, 0.0, 1.0)


def solve_eta(new: Sequence[float], old: Sequence[float], eps: float) -> float:
    """eta* of the closed form by bisection in log eta on [1e-7, 1e2] (0 when KL(new || old)
    <= eps): an independent check of `kl_projection` on one 3-token row."""
    if kl(np.asarray(new), np.asarray(old)) <= eps:
        return 0.0
    lo, hi = np.log(1e-7), np.log(1e2)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if kl(eta_path(new, old, np.array([np.exp(mid)]))[0], np.asarray(old)) > eps:
            lo = mid
        else:
            hi = mid
    return float(np.exp(hi))
