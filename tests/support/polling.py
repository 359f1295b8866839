"""Waiting in tests for what a fake server records from its own thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

WAIT_S = 2.0


async def eventually(check: Callable[[], object]) -> None:
    """Poll `check` until it is true (the fakes record from their own thread, so there is no
    event to wait on); TimeoutError after `WAIT_S`."""
    async with asyncio.timeout(WAIT_S):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
