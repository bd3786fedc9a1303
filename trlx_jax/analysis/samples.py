"""Completions from samples.jsonl (rows of the periodic evaluations): good and bad side by side."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from typing import Any

from trlx_jax.sweep import Run
from trlx_jax.trainer.metrics import SAMPLES_FILE


def read_samples(run: Run | str) -> list[dict[str, Any]]:
    """The rows of a run's samples.jsonl, each with its run's path added ([] without the file)."""
    path = run.path if isinstance(run, Run) else run
    file = os.path.join(path, SAMPLES_FILE)
    if not os.path.isfile(file):
        return []
    with open(file) as f:
        return [{"run": path, **json.loads(line)} for line in f if line.strip()]


def _is_good(row: dict[str, Any]) -> bool:
    return bool(row["correct"]) if row.get("correct") is not None else row["reward"] > 0


def good_and_bad(rows: Sequence[dict[str, Any]], n: int = 4
                 ) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Up to `n` pairs (good, bad) from sample rows, latest evaluations first: good = correct
    (or reward > 0 where rows have no "correct"), bad = the others; None fills a short side."""
    ordered = sorted(rows, key=lambda r: -r["step"])
    good = [r for r in ordered if _is_good(r)][:n]
    bad = [r for r in ordered if not _is_good(r)][:n]
    return [(good[i] if i < len(good) else None, bad[i] if i < len(bad) else None)
            for i in range(max(len(good), len(bad)))]


def _cell(row: dict[str, Any] | None, label: str) -> str:
    if row is None:
        return "<td>-</td>"
    source = f"{os.path.basename(row['run'])}, step {row['step']}" if "run" in row else \
        f"step {row['step']}"
    answer = row.get("answer")
    lines = [f"<code>{html.escape(row['prompt'])}</code>"
             f"<b><code>{html.escape(row['completion'])}</code></b>",
             f"{label}, reward {row['reward']:.2f}"
             + (f", answer <code>{html.escape(str(answer))}</code>" if answer is not None else ""),
             f"<small>{html.escape(source)}</small>"]
    return "<td style='text-align:left'>" + "<br>".join(lines) + "</td>"


def samples_html(pairs: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> str:
    """An HTML table of (good, bad) pairs: prompt + completion (bold), reward, answer, source."""
    body = "".join(f"<tr>{_cell(good, 'correct')}{_cell(bad, 'wrong')}</tr>"
                   for good, bad in pairs)
    return ("<table><tr><th>good</th><th>bad</th></tr>" + body + "</table>") if pairs else \
        "<p>no samples (samples.jsonl is empty)</p>"
