"""Figures of the trust regions: the 3-token simplex, KL along the eta path, one real token's
support before and after the projection, and TROLL next to DPPO on a rollout's tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from trlx_jax.analysis import simplex
from trlx_jax.analysis.figures import new_figure
from trlx_jax.analysis.tokens import TokenView, context, slot_table

# The eta values marked along the path in the simplex figure.
MARKED_ETAS = (0.25, 1.0, 4.0, 16.0)


def plot_simplex(old: Sequence[float], new: Sequence[float], eps: float,
                 projected: Sequence[float], eta: float,
                 names: Sequence[str] = ("token 0", "token 1", "token 2")) -> Figure:
    """The triangle of 3-token distributions with the ball KL(p || old) <= eps, the old and new
    policies, the path p_eta (eta from 0 to inf) and the projected point (`projected`, e.g.
    from kl_projection) with its dual variable `eta`."""
    fig, ax = new_figure(width=6.0, height=5.4)
    corners = np.vstack([simplex.CORNERS, simplex.CORNERS[:1]])
    ax.plot(corners[:, 0], corners[:, 1], color="0.3", linewidth=1)
    for (x, y), name, dy in zip(simplex.CORNERS, names, (-0.05, -0.05, 0.03), strict=True):
        ax.text(x, y + dy, name, ha="center", va="center", fontsize=9)
    ball = simplex.to_xy(simplex.kl_ball_boundary(old, eps))
    ax.fill(ball[:, 0], ball[:, 1], color="C0", alpha=0.15, linewidth=0)
    ax.plot(ball[:, 0], ball[:, 1], color="C0", linewidth=1.2,
            label=f"trust region KL(p || old) ≤ {eps:g}")
    etas = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 400)])
    path = simplex.to_xy(simplex.eta_path(new, old, etas))
    ax.plot(path[:, 0], path[:, 1], color="C1", linewidth=1.2,
            label="p_η: (log new + η log old) / (1 + η), normalized")
    marks = simplex.to_xy(simplex.eta_path(new, old, np.array(MARKED_ETAS)))
    ax.scatter(marks[:, 0], marks[:, 1], color="C1", s=12, zorder=3)
    for (x, y), e in zip(marks, MARKED_ETAS, strict=True):
        ax.annotate(f"η={e:g}", (x, y), textcoords="offset points", xytext=(6, -8),
                    fontsize=7, color="C1")
    for point, style, label in (
        (old, dict(color="black", marker="o"), "old policy (behaviour)"),
        (new, dict(color="C3", marker="X"), "new policy (unconstrained)"),
        (projected, dict(color="C2", marker="*", s=160), f"projected (η* = {eta:.4g})"),
    ):
        x, y = simplex.to_xy(np.asarray(point))
        ax.scatter([x], [y], zorder=4, label=label, **{"s": 60, **style})
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.1, 0.93)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("argmin_p KL(p || new)  s.t.  KL(p || old) ≤ eps", fontsize=9)
    return fig


def plot_eta_curve(old: Sequence[float], new: Sequence[float], eps: float,
                   eta: float) -> Figure:
    """KL(p_eta || old) and KL(p_eta || new) against eta (log axis), eps and eta* marked:
    the first falls monotonically from KL(new || old) to 0, and eta* is where it meets eps."""
    fig, ax = new_figure(width=6.0, height=3.2)
    etas = np.geomspace(1e-3, 1e3, 400)
    path = simplex.eta_path(new, old, etas)
    ax.plot(etas, simplex.kl(path, np.asarray(old)), color="C0", label="KL(p_η || old)")
    ax.plot(etas, simplex.kl(path, np.asarray(new)), color="C3", label="KL(p_η || new)")
    ax.axhline(eps, color="C0", linestyle="--", linewidth=0.8, label=f"eps = {eps:g}")
    if eta > 0:
        ax.axvline(eta, color="C2", linewidth=0.8, label=f"η* = {eta:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel("η", fontsize=8)
    ax.set_ylabel("nats", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_token_support(view: TokenView, row: int, pos: int, top: int = 12) -> Figure:
    """Bars of the old, new and projected probabilities on one token's support: the `top` most
    likely slots under the old policy and the lumped tail (the sampled token marked *)."""
    slots = slot_table(view, row, pos)
    tail = [s for s in slots if s["id"] < 0]
    shown = [s for s in slots if s["id"] >= 0][:top] + tail
    labels = [repr(s["token"])[1:-1] + (" *" if s["sampled"] else "") if s["id"] >= 0
              else s["token"] for s in shown]
    fig, ax = new_figure(width=max(6.0, 0.55 * len(shown) + 1.5), height=3.6)
    x = np.arange(len(shown))
    for j, (key, label) in enumerate((("old", f"old (step {view.steps[0]})"),
                                      ("new", f"new (step {view.steps[1]})"),
                                      ("projected", "projected"))):
        ax.bar(x + (j - 1) * 0.27, [s[key] for s in shown], width=0.27, color=f"C{(0, 3, 2)[j]}",
               label=label)
    ax.set_xticks(x, labels, fontsize=8, rotation=45 if len(shown) > 8 else 0)
    ax.set_ylabel("probability", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    ctx = context(view, row, pos)
    ax.set_title(
        f"next token after {ctx[-40:]!r}:  KL(new || old) = {view.kl_before[row, pos]:.3g}, "
        f"η = {view.eta[row, pos]:.3g}, KL(projected || old) = {view.kl_after[row, pos]:.3g} "
        f"(eps {view.eps:g})", fontsize=8)
    return fig


def plot_troll_vs_dppo(view: TokenView, variant: str = "binary_tv") -> Figure:
    """Two panels over the rollout's response tokens. Left, TROLL: KL(new || old) before vs
    after the projection (everything above eps lands on eps). Right, DPPO `variant` on the same
    tokens: the sampled token's probability change pi - mu against the divergence, kept and
    masked tokens, by the sign of the advantage, with delta marked."""
    mask = view.response_mask.astype(bool)
    fig, (left, right) = new_figure(1, 2, width=4.8, height=3.8)
    before, after = view.kl_before[mask], view.kl_after[mask]
    active = view.active[mask]
    left.scatter(before[~active], after[~active], s=10, color="0.5", label="inside (identity)")
    left.scatter(before[active], after[active], s=14, color="C2", label="projected")
    top = max(float(before.max(initial=0.0)), view.eps) * 1.1
    left.plot([0, top], [0, top], color="0.7", linewidth=0.8)
    left.axhline(view.eps, color="C0", linestyle="--", linewidth=0.8, label=f"eps {view.eps:g}")
    left.set_xlabel("KL(new || old) on the support", fontsize=8)
    left.set_ylabel("KL(projected || old)", fontsize=8)
    left.set_title(f"TROLL: {active.mean():.0%} of {mask.sum()} tokens projected", fontsize=9)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)

    change = (view.pi_sampled - view.mu_sampled)[mask]
    divergence = view.dppo_divergence[variant][mask]
    keep = view.dppo_keep[variant][mask] > 0
    positive = np.broadcast_to(view.advantages[:, None], mask.shape)[mask] > 0
    for sign, marker in ((True, "^"), (False, "v")):
        for kept, color in ((True, "0.5"), (False, "C3")):
            pick = (positive == sign) & (keep == kept)
            if pick.any():
                right.scatter(change[pick], divergence[pick], s=14, marker=marker, color=color,
                              label=f"A {'>' if sign else '<='} 0, {'kept' if kept else 'masked'}")
    low, high = view.deltas[variant]
    right.axhline(high, color="C3", linestyle="--", linewidth=0.8, label=f"delta_high {high:g}")
    if low != high:
        right.axhline(low, color="C3", linestyle=":", linewidth=0.8, label=f"delta_low {low:g}")
    right.axvline(0.0, color="0.7", linewidth=0.8)
    right.set_xlabel("pi(a_t) - mu(a_t) of the sampled token", fontsize=8)
    right.set_ylabel(f"DPPO divergence ({variant})", fontsize=8)
    right.set_title(f"DPPO {variant}: {(~keep).mean():.0%} masked", fontsize=9)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    return fig
