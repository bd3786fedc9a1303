"""Host-side checks of arguments at public boundaries: shapes, dtypes, id ranges, value domains.

Every check costs a few Python operations per call. Checks of values (ids in range, finite
scalars) run only on concrete inputs: NumPy arrays, Python numbers, and jax.Arrays outside a
trace whose data this process holds. Under `jit` the inputs are tracers, so only shapes and
dtypes are checked, once at trace time, and nothing is added to a compiled program.
Messages name the argument (or config key), the offending value and the allowed domain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jax
import numpy as np


class ArgumentError(ValueError):
    """An argument outside its shape, dtype or value domain; the message names it and the fix."""


class MissingKeyError(KeyError):
    """A required key is missing from a mapping argument; the message says what to add."""

    def __str__(self) -> str:
        return str(self.args[0])


def concrete(x: Any) -> np.ndarray | None:
    """The value of `x` as a host array, or None when it is None, traced or not fully
    addressable."""
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    return np.asarray(x)


def shape_of(x: Any) -> tuple[int, ...]:
    """The shape of an array, tracer or scalar."""
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else tuple(np.shape(x))


def dtype_of(x: Any) -> np.dtype:
    """The dtype of an array, tracer or Python scalar."""
    dtype = getattr(x, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(x).dtype


def check_rank(name: str, x: Any, rank: int | Collection[int], layout: str) -> tuple[int, ...]:
    """Raises unless `x` has rank `rank` (or one of several); returns its shape."""
    shape = shape_of(x)
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if len(shape) not in ranks:
        raise ArgumentError(f"{name} must be {layout} (rank {' or '.join(map(str, ranks))}), "
                            f"got shape {shape}")
    return shape


def check_min_rank(name: str, x: Any, minimum: int, layout: str) -> tuple[int, ...]:
    """Raises unless `x` has at least `minimum` axes; returns its shape."""
    shape = shape_of(x)
    if len(shape) < minimum:
        raise ArgumentError(f"{name} must be {layout} (at least {minimum} axes), got shape "
                            f"{shape}")
    return shape


def check_shape(name: str, x: Any, expected: Sequence[int | None], layout: str,
                reason: str = "") -> tuple[int, ...]:
    """Raises unless `x` has shape `expected` (None: any size); `reason` says where sizes come
    from, e.g. 'as target_ids [B, T]'."""
    shape = shape_of(x)
    fits = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=False)
    )
    if not fits:
        sizes = ["?" if e is None else str(e) for e in expected]
        want = f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''})"
        why = f" {reason}" if reason else ""
        raise ArgumentError(f"{name} must be {layout} = {want}{why}, got shape {shape}")
    return shape


def check_floating(name: str, x: Any) -> None:
    """Raises unless `x` has a floating dtype."""
    dtype = dtype_of(x)
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise ArgumentError(f"{name} must be a floating-point array, got dtype {dtype}")


def check_integer(name: str, x: Any, what: str = "token ids") -> None:
    """Raises unless `x` has an integer dtype (bool and float are refused, never truncated)."""
    dtype = dtype_of(x)
    if not np.issubdtype(dtype, np.integer):
        raise ArgumentError(
            f"{name} must hold {what} with an integer dtype, got {dtype}: float ids would be "
            "truncated silently; pass them as int32 (e.g. np.asarray(ids, np.int32))"
        )


def check_bool_like(name: str, x: Any) -> None:
    """Raises unless `x` is a bool array or holds only 0 and 1."""
    if dtype_of(x) == np.bool_:
        return
    values = concrete(x)
    if values is not None and values.size and not np.isin(values, (0, 1)).all():
        raise ArgumentError(f"{name} must be a bool mask (True on real tokens), got values "
                            f"other than 0 and 1 (dtype {dtype_of(x)})")


def check_ids(name: str, x: Any, vocab_size: Any, *, where: Any = None,
              vocab_from: str = "the vocabulary") -> None:
    """Raises unless `x` holds integer ids in [0, vocab_size) (where `where` is True, if given).

    Values are checked when the ids are concrete; the upper end when vocab_size is too.
    """
    check_integer(name, x)
    values = concrete(x)
    vocab = concrete(vocab_size)
    if values is None or not values.size:
        return
    upper = int(vocab) if vocab is not None and not vocab.ndim else None
    bad = values < 0 if upper is None else (values < 0) | (values >= upper)
    if where is not None:
        mask = concrete(where)
        if mask is None:
            return
        bad &= np.broadcast_to(mask.astype(bool), bad.shape)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        bounds = f"[0, {upper}) ({vocab_from})" if upper is not None else "[0, V)"
        raise ArgumentError(
            f"{name} holds id {values[index]} at index {index}, outside {bounds}; token ids "
            "must come from the model's own tokenizer"
        )


def check_id(name: str, value: Any, vocab_size: int, vocab_from: str = "the vocabulary") -> int:
    """A single token id (a Python or NumPy integer) in [0, vocab_size); returns it as int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ArgumentError(f"{name} must be an integer token id, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ArgumentError(f"{name}={value} is outside [0, {vocab_size}) ({vocab_from}); use an "
                            "id of the model's own tokenizer")
    return int(value)


def check_id_sequence(name: str, values: Any, vocab_size: int,
                      vocab_from: str = "the vocabulary") -> tuple[int, ...]:
    """A sequence of token ids (a list, tuple or 1-D array, not a single id or a string)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise ArgumentError(f"{name} must be a sequence of token ids (e.g. [eos_id]), got "
                            f"{values!r}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ArgumentError(f"{name} must be 1-D, got shape {values.shape}")
    return tuple(check_id(f"{name}[{i}]", v, vocab_size, vocab_from)
                 for i, v in enumerate(values))


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Domain:
    """A numeric domain: an interval (open or closed ends, None = unbounded), optionally
    integers only, finite only, or None allowed; `note` is appended to its description."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    finite: bool = False
    none_ok: bool | str = False  # a str says what None means
    note: str = ""

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Elementwise membership of a numeric array (NaN never belongs)."""
        values = np.asarray(values)
        numeric = values.dtype != np.bool_ and np.issubdtype(values.dtype, np.number)
        if not numeric or (self.integer and not np.issubdtype(values.dtype, np.integer)):
            return np.zeros(values.shape, bool)
        f = values.astype(np.float64)
        ok = ~np.isnan(f)
        if self.finite:
            ok &= np.isfinite(f)
        if self.low is not None:
            ok &= f > self.low if self.low_open else f >= self.low
        if self.high is not None:
            ok &= f < self.high if self.high_open else f <= self.high
        return ok

    def contains(self, value: Any) -> bool:
        """True when the scalar `value` (a Python or NumPy number, or None) is in the domain."""
        if value is None:
            return bool(self.none_ok)
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            return False
        return bool(self.mask(np.asarray(value)))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
        else:
            text = ""
        if self.integer:
            text = f"an integer {text}".strip()
        if self.finite:
            text = f"{text} and finite" if text else "finite"
        text = text or "a number"
        if self.none_ok:
            text += f" (or None: {self.none_ok})" if isinstance(self.none_ok, str) else " (or None)"
        return f"{text} {self.note}" if self.note else text


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a fixed set of names."""

    names: tuple[str, ...]

    def contains(self, value: Any) -> bool:
        """True when `value` is one of the names."""
        return isinstance(value, str) and value in self.names

    def __str__(self) -> str:
        return f"one of {', '.join(self.names)}"


def describe_violation(name: str, value: Any, domain: Domain | Choice) -> str:
    """'name=value is out of range: it must be <domain>' (or 'is not valid' for names)."""
    verb = "is not valid" if isinstance(domain, Choice) else "is out of range"
    value = value.item() if isinstance(value, np.generic) else value
    return f"{name}={value!r} {verb}: it must be {domain}"


def check_value(name: str, value: Any, domain: Domain | Choice) -> None:
    """Raises unless the scalar (or every entry of a concrete array) lies in `domain`."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(domain, Domain) and isinstance(value, np.ndarray | jax.Array):
        values = concrete(value)
        if values is None:
            return
        ok = domain.mask(values)
        if not ok.all():
            raise ArgumentError(describe_violation(name, values[~ok].reshape(-1)[0].item(),
                                                   domain))
        return
    if not domain.contains(value):
        raise ArgumentError(describe_violation(name, value, domain))


def check_table(values: Mapping[str, Any], table: Mapping[str, Domain | Choice],
                prefix: str = "") -> None:
    """Checks each key of `table` present in `values` (a dict or ConfigDict) against its domain."""
    for key, domain in table.items():
        if key in values:
            check_value(f"{prefix}{key}", values[key], domain)


def require_keys(mapping: Mapping[str, Any], keys: Sequence[str], owner: str) -> None:
    """Raises MissingKeyError naming the first of `keys` missing from `mapping`."""
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise MissingKeyError(
            f"{owner} needs {', '.join(repr(k) for k in missing)} in its input (it has "
            f"{', '.join(sorted(map(repr, mapping)))}); see the batch keys in trlx_jax.objectives"
        )
