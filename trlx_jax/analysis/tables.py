"""Rows of dicts as a markdown table (what a notebook shows with IPython.display.Markdown)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any, float_format: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, float_format)
    if isinstance(value, tuple):
        return ", ".join(_cell(v, float_format) for v in value)
    return str(value).replace("|", "\\|").replace("\n", "\\n")


def markdown_rows(rows: Sequence[Mapping[str, Any]], float_format: str = ".4g") -> str:
    """A markdown table with the union of the rows' keys as columns (missing cells "-"),
    floats as `float_format`, booleans as yes / no, pipes and newlines escaped."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], float_format) if c in row else "-"
                                       for c in columns) + " |")
    return "\n".join(lines)
