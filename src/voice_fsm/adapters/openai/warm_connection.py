"""An HTTP connection to the provider opened before a turn needs it.

The connection pool keeps connections between turns (`client.KEEPALIVE_S`), but the
first turn after start-up, or after a long pause, would still open one on the critical path:
against OpenAI a TCP and TLS handshake of 100 ms or more between the final transcript and
the language model's request. `WarmConnection` opens one ahead of time with a cheap request
(``GET /models``) at start-up and whenever a turn begins after the pool may have let its
connections go; the user is still talking then, so the handshake is off the critical path.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from openai import AsyncOpenAI, OpenAIError

from voice_fsm.adapters.openai.client import KEEPALIVE_S
from voice_fsm.logging_setup import get_logger

STALE_AFTER_S = KEEPALIVE_S / 2
"""A turn that begins this long after the last request warms the connection again: the pool
or the provider may have closed it by the time the turn's request goes out."""


class WarmConnection:
    def __init__(self, client: AsyncOpenAI, *, stage: str) -> None:
        self._client = client
        self._stage = stage
        self._last_used: float | None = None  # time.monotonic() of the last request
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(stage=stage)

    def used(self) -> None:
        """A request went out: its connection stays in the pool."""
        self._last_used = time.monotonic()

    def prepare(self) -> None:
        """A turn begins: open a connection in the background unless one is surely open."""
        fresh = self._last_used is not None and time.monotonic() - self._last_used < STALE_AFTER_S
        if fresh or (self._task is not None and not self._task.done()):
            return
        self.used()  # counted from now: one warm-up at a time
        self._task = asyncio.create_task(self._warm(), name=f"warm-{self._stage}")

    async def _warm(self) -> None:
        started = time.monotonic()
        try:
            # Any complete answer leaves the connection in the pool, a 404 from a server
            # without the endpoint too; no retry, nothing is waiting for it.
            response = await self._client.with_options(max_retries=0).get(
                "/models", cast_to=httpx.Response
            )
        except OpenAIError as err:
            self._log.info("connection.warm_failed", error=type(err).__name__)
            return
        self._log.debug(
            "connection.warmed",
            status=response.status_code,
            ms=round((time.monotonic() - started) * 1000),
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
