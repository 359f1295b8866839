"""`rate_limits.updated`: the one rate limit a Realtime client meets here, told truthfully.

voice-fsm puts no limit on tokens or on requests to a model; what it limits is how fast a
connection may send events (`VOICE_FSM_LIMITS__MESSAGES_PER_S`): a bucket of that many,
refilled at that many a second, past which the server reads the socket more slowly (nothing is
dropped). That is reported as OpenAI's `requests` limit: `limit` the bucket's size,
`remaining` the events that may still come at once, `reset_seconds` until it is full again.

The endpoint keeps the bucket that paces the socket; this keeps the same account, one event
taken for each event the front end is given, as the endpoint takes one for each it reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from openai.types.realtime import RateLimitsUpdatedEvent
from openai.types.realtime.rate_limits_updated_event import RateLimit

from voice_fsm.realtime.wire import new_id


class EventPace:
    """`per_second` client events a second, up to `per_second` at once."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._tokens = per_second
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.per_second, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        return self._tokens

    def took(self) -> None:
        """One event in. Below one, the endpoint waits before it reads the next: the debt is
        what it waits for."""
        self._tokens = self._refill() - 1

    def event(self) -> RateLimitsUpdatedEvent:
        tokens = self._refill()
        requests = RateLimit(
            name="requests",
            limit=math.floor(self.per_second),
            remaining=max(0, math.floor(tokens)),
            reset_seconds=round((self.per_second - tokens) / self.per_second, 3),
        )
        return RateLimitsUpdatedEvent(
            type="rate_limits.updated", event_id=new_id("event"), rate_limits=[requests]
        )
