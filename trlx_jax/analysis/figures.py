"""Figures without pyplot's global state: a new Figure, and saving one as a named PNG."""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure


def new_figure(rows: int = 1, cols: int = 1, *, width: float = 6.0, height: float = 3.5,
               squeeze: bool = True) -> tuple[Figure, Any]:
    """(figure, axes) of a rows x cols grid, `width` x `height` inches per panel (axes as
    Figure.subplots returns them: one Axes, or an array of them)."""
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=squeeze)
    return fig, axes


def save_figure(fig: Figure, out_dir: str, name: str, dpi: int = 100) -> str:
    """Writes `fig` as out_dir/<name>.png; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    fig.savefig(path, dpi=dpi)
    return path
