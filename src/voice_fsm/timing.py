"""Per-turn timing: named marks on one monotonic clock, and spans between them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Marks moments of a turn; `ms(a, b)` is the time from mark `a` to mark `b`."""

    def __init__(self) -> None:
        self._marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def mark_once(self, name: str) -> None:
        self._marks.setdefault(name, time.perf_counter())

    def has(self, name: str) -> bool:
        return name in self._marks

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Marks `<name>.start` on entry and `<name>.end` on a normal exit."""
        self.mark(f"{name}.start")
        yield
        self.mark(f"{name}.end")

    def ms_since(self, name: str) -> int | None:
        """Milliseconds from mark `name` to now."""
        if name not in self._marks:
            return None
        return round((time.perf_counter() - self._marks[name]) * 1000)

    def offsets(self, origin: str) -> dict[str, float]:
        """Every mark, in seconds since mark `origin` (empty without it)."""
        if origin not in self._marks:
            return {}
        zero = self._marks[origin]
        return {name: round(at - zero, 6) for name, at in self._marks.items()}

    def ms(self, start: str, end: str) -> int | None:
        if start not in self._marks or end not in self._marks:
            return None
        return round((self._marks[end] - self._marks[start]) * 1000)
