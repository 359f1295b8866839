"""A session's inbox, bounded in bytes rather than items: a few large audio frames or many
small commands fill it alike, and a full inbox makes the receive loop stop reading the socket,
which slows the client through TCP instead of growing the server's memory."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

ITEM_OVERHEAD = 256
"""What an item costs besides its payload: a flood of tiny messages is bounded too."""


def item_size(item: object) -> int:
    return ITEM_OVERHEAD + (len(item) if isinstance(item, bytes | bytearray) else 0)


class ByteBoundedQueue(Generic[T]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._changed = asyncio.Event()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Queue `item`, waiting for room first; an item larger than the bound fits alone."""
        size = item_size(item)
        while self._items and self._bytes + size > self.max_bytes:
            self._changed.clear()
            await self._changed.wait()
        self._items.append((item, size))
        self._bytes += size
        self._changed.set()

    def put_now(self, item: T) -> None:
        """Queue `item` at once, room or not: for the few small reports the session's own
        stages make (at most a handful a turn), which must never wait behind a full inbox."""
        size = item_size(item)
        self._items.append((item, size))
        self._bytes += size
        self._changed.set()

    async def get(self) -> T:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        item, size = self._items.popleft()
        self._bytes -= size
        self._changed.set()
        return item

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
        self._changed.set()
