"""Typed errors to the client and to the log, with a budget for errors in messages: a client
sending bad messages in a loop hears of a few each second, not of each."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from voice_fsm.errors import VoiceError
from voice_fsm.events import ErrorEvent, ServerEvent
from voice_fsm.rate_limit import TokenBucket

DROPPED_ERRORS_LOG_EVERY_S = 10.0
"""How often a session flooding bad messages may log how many error events it was spared;
the rest is counted and logged when the session ends."""


class ErrorReports:
    def __init__(self, errors_per_s: float, send: Callable[[ServerEvent], Awaitable[None]]):
        self._send = send
        self._budget = TokenBucket(errors_per_s, burst=max(1.0, errors_per_s))
        self._dropped = 0
        self._dropped_logged_at = float("-inf")

    async def report(self, err: VoiceError, *, turn: int, log: Any) -> None:
        """Log `err` and send it as an `error` event."""
        log.warning("turn.error", code=err.code.value, stage=err.stage.value, message=err.message)
        await self._send(
            ErrorEvent(
                code=err.code,
                stage=err.stage,
                message=err.message,
                retryable=err.retryable,
                turn=turn,
            )
        )

    async def report_input(self, err: VoiceError, *, turn: int, log: Any) -> None:
        """Report an error in a message (not a turn's failure), within the budget."""
        if not self._budget.take():
            self._dropped += 1
            return
        self.log_dropped(log)
        await self.report(err, turn=turn, log=log)

    def log_dropped(self, log: Any, *, final: bool = False) -> None:
        """One summary line for the error events dropped so far: at most one line each
        `DROPPED_ERRORS_LOG_EVERY_S` while a flood goes on, and the rest at the end."""
        now = time.monotonic()
        if not self._dropped or (
            not final and now - self._dropped_logged_at < DROPPED_ERRORS_LOG_EVERY_S
        ):
            return
        log.warning("input.errors_dropped", count=self._dropped)
        self._dropped = 0
        self._dropped_logged_at = now
