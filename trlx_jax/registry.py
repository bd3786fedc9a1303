"""String registries (losses, advantage estimators, rewards, tasks) with helpful lookup errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A lookup of a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table; unknown names raise UnknownNameError (a KeyError) listing all."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an object under `name` (duplicate names are an error)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Returns the entry for `name` or raises a KeyError that names the valid choices."""
        # A non-string (None, a list) gets the list of names too, not a TypeError.
        if not isinstance(name, str) or name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3) if isinstance(
                name, str) else []
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Valid names: {valid}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
