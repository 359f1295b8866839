"""How many sessions may run: in all, and from one client address; none while draining."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    reason: str
    retry_after_s: int


class SessionSlots:
    def __init__(self, max_sessions: int, max_per_client: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.draining = False
        self._per_client: Counter[str] = Counter()
        self._total = 0

    @property
    def in_use(self) -> int:
        return self._total

    def take(self, client: str) -> Refusal | None:
        """Hold a slot for `client`, or say why not."""
        if self.draining:
            return Refusal("server-draining", 5)
        if self._total >= self.max_sessions:
            return Refusal("server-full", 5)
        if self._per_client[client] >= self.max_per_client:
            return Refusal("client-limit", 10)
        self._total += 1
        self._per_client[client] += 1
        return None

    def give_back(self, client: str) -> None:
        self._total -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]
