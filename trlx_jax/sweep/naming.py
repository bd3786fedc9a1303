"""Names from config overrides: readable, stable, filesystem-safe (`loss_name-clip__lr-0.0003`).

The same names serve run directories of a sweep and the files of its aggregate plots, so a
configuration is called the same everywhere.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

# The POSIX portable filename characters; everything else becomes "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 120
CONFIG_KEY = "config"  # a sweep point's config file (`path.py[:arg]`) instead of an override


def safe(text: str) -> str:
    """`text` with every run of characters outside [A-Za-z0-9._-] replaced by one "-"."""
    cleaned = _UNSAFE.sub("-", text).strip("-")
    return cleaned.lstrip(".") or "x"


def format_override(value: Any) -> str:
    """A config value as the right-hand side of `--config.KEY=VALUE` (what config_flags parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(format_override(v) for v in value) + ("," if len(value) == 1
                                                                    else "") + ")"
    return str(value)


def format_value(value: Any) -> str:
    """A value as it reads in a name: 0.0003, 1e-06, true, 2x2x2, clip."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    if value is None:
        return "none"
    return safe(str(value))


def config_file_label(path: str) -> str:
    """`configs/arithmetic.py:clip` -> `arithmetic_clip`; `configs/default.py` -> `default`."""
    file_part, _, arg = path.partition(":")
    stem = os.path.splitext(os.path.basename(file_part))[0]
    return safe(f"{stem}_{arg}" if arg else stem)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key -> its last part (`optimizer.lr` -> `lr`), or the whole key where two keys
    share a last part (`loss.eps` and `sft.eps` stay as they are)."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves, strict=True)}


def name_parts(params: Mapping[str, Any], short: Mapping[str, str] | None = None) -> list[str]:
    """`key-value` for each parameter (a config file by its label alone), in `params` order."""
    short = short or short_keys(list(params))
    parts = []
    for key, value in params.items():
        if key == CONFIG_KEY:
            parts.append(config_file_label(str(value)))
        else:
            parts.append(f"{safe(short[key])}-{format_value(value)}")
    return parts


def point_name(params: Mapping[str, Any], short: Mapping[str, str] | None = None) -> str:
    """The name of one configuration: its parameters joined by "__" ("base" for none); names
    longer than MAX_NAME_LENGTH keep a prefix and a hash of the whole name, so they stay unique."""
    name = "__".join(name_parts(params, short)) or "base"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME_LENGTH - 9]}-{digest}"
    return name


def label(params: Mapping[str, Any], short: Mapping[str, str] | None = None) -> str:
    """A configuration for people: `loss_name=clip, lr=0.0003` ("all runs" for none)."""
    short = short or short_keys(list(params))
    items = [config_file_label(str(v)) if k == CONFIG_KEY else f"{short[k]}={format_value(v)}"
             for k, v in params.items()]
    return ", ".join(items) or "all runs"
