"""Independent float64 NumPy/SciPy references for the TROLL tests (no code shared with trlx_jax).

The projection is solved by Brent's method on eta itself, gradients by central finite
differences, and the sparse support is built densely over the whole vocabulary from the spec's
words, token by token.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

LOG_FLOOR = math.log(1e-12)
ETA_MIN, ETA_MAX = 1e-7, 1e2


def _normalize(x: np.ndarray) -> np.ndarray:
    return x - logsumexp(x)


def _mixture(la: np.ndarray, lb: np.ndarray, eta: float) -> np.ndarray:
    return _normalize((la + eta * lb) / (1 + eta))


def _kl(logp: np.ndarray, logq: np.ndarray) -> float:
    return float(np.sum(np.exp(logp) * (logp - logq)))


def project_row(a, b, valid, eps: float) -> dict:
    """One row: projected log-probs over `valid` (0 elsewhere), eta, KL before and after."""
    valid = np.asarray(valid, bool)
    la = _normalize(np.asarray(a, np.float64)[valid])
    lb = _normalize(np.asarray(b, np.float64)[valid])
    kl0 = _kl(la, lb)
    if kl0 <= eps:
        eta = 0.0
    else:
        f = lambda e: _kl(_mixture(la, lb, e), lb) - eps
        if f(ETA_MAX) > 0:
            eta = ETA_MAX
        elif f(ETA_MIN) <= 0:
            eta = ETA_MIN
        else:
            eta = brentq(f, ETA_MIN, ETA_MAX, xtol=1e-300, rtol=1e-15, maxiter=1000)
    lp = _mixture(la, lb, eta)
    out = np.zeros(valid.shape)
    out[valid] = lp
    return {"logp": out, "eta": eta, "kl_before": kl0, "kl_after": _kl(lp, lb)}


def project(a, b, valid, eps) -> dict:
    """Rows [N, S] (eps scalar or [N]) -> stacked `project_row` results."""
    a, b, valid = np.asarray(a), np.asarray(b), np.asarray(valid, bool)
    eps = np.broadcast_to(np.asarray(eps, np.float64), a.shape[:1])
    rows = [project_row(a[i], b[i], valid[i], float(eps[i])) for i in range(len(a))]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def vjp_row(a, b, valid, eps: float, g, wrt: str = "a", h: float = 1e-5) -> np.ndarray:
    """g^T d logp / d(a or b) by central differences of `project_row` (masked slots: 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    valid = np.asarray(valid, bool)
    out = np.zeros(a.shape)
    for k in np.flatnonzero(valid):
        step = np.zeros(a.shape)
        step[k] = h
        if wrt == "a":
            hi, lo = project_row(a + step, b, valid, eps), project_row(a - step, b, valid, eps)
        else:
            hi, lo = project_row(a, b + step, valid, eps), project_row(a, b - step, valid, eps)
        out[k] = np.sum(g[valid] * (hi["logp"] - lo["logp"])[valid]) / (2 * h)
    return out


def kept_set(logp: np.ndarray, k: int, delta: float, sampled: int) -> set[int]:
    """Token ids a policy keeps: its most likely ones until k or mass 1 - delta, + sampled."""
    kept: set[int] = set()
    mass = 0.0
    for token in np.argsort(-logp, kind="stable"):
        if len(kept) >= k or mass >= 1 - delta:
            break
        kept.add(int(token))
        mass += math.exp(logp[token])
    return kept | {int(sampled)}


def sparse_dense(logp: np.ndarray, kept: set[int]) -> np.ndarray:
    """[V] sparse log-probs: logp on `kept`, the floor elsewhere, renormalized over V."""
    out = np.full(logp.shape, LOG_FLOOR)
    idx = np.array(sorted(kept))
    out[idx] = logp[idx]
    return _normalize(out)


def support_dense(new_logp, old_logp, sampled: int, k: int, delta: float, union: bool = False):
    """Full-vocabulary sparse distributions of one token: (new [V], old [V], union set U)."""
    k = min(k, len(new_logp))
    kn = kept_set(new_logp, k, delta, sampled)
    ko = kept_set(old_logp, k, delta, sampled)
    union_set = kn | ko
    new = sparse_dense(new_logp, union_set if union else kn)
    return new, sparse_dense(old_logp, ko), union_set
