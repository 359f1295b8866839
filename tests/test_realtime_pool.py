"""RealtimeSessionPool with stand-in connections: what it keeps, opens, watches and closes.

The adapter's tests (test_openai_realtime_tts.py) run it against the fake Realtime server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent
from openai.types.realtime.realtime_error import RealtimeError
from structlog.testing import capture_logs
from websockets.exceptions import ConnectionClosedOK

from voice_fsm.adapters.openai.realtime_pool import (
    PoolClosedError,
    PooledSession,
    RealtimeSessionPool,
)
from voice_fsm.errors import ErrorCode, ProviderError, Stage

from support.servers import eventually


class Connection:
    """Stands in for an `AsyncRealtimeConnection`: events to `recv` are put in by the test."""

    def __init__(self, key: str, confirmed: bool) -> None:
        self.key, self.confirmed = key, confirmed
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    async def recv(self) -> object:
        item = await self.events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True
        self.events.put_nowait(ConnectionClosedOK(None, None))


class Opener:
    def __init__(self) -> None:
        self.opened: list[Connection] = []
        self.delay = 0.0
        self.failure: Exception | None = None

    async def __call__(self, key: str, confirmed: bool) -> AsyncRealtimeConnection:
        await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        connection = Connection(key, confirmed)
        self.opened.append(connection)
        return cast(AsyncRealtimeConnection, connection)


PoolFactory = Callable[..., RealtimeSessionPool]


@pytest.fixture
def opener() -> Opener:
    return Opener()


@pytest.fixture
async def make_pool(opener: Opener) -> AsyncIterator[PoolFactory]:
    pools: list[RealtimeSessionPool] = []

    def make(**options: Any) -> RealtimeSessionPool:
        pool = RealtimeSessionPool(opener, name="test", **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose()


def stub(session: PooledSession) -> Connection:
    return cast(Connection, session.connection)


async def used(pool: RealtimeSessionPool, key: str = "alloy") -> PooledSession:
    """Take a session and give it back after a clean response."""
    session = await pool.take(key)
    session.reusable = True
    pool.give_back(session)
    return session


async def test_a_spare_is_opened_confirmed_and_handed_out(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    pool.refill("alloy")
    pool.refill("alloy")  # one is on its way: no second
    session = await pool.take("alloy")  # waits for it rather than opening another
    assert [(c.key, c.confirmed) for c in opener.opened] == [("alloy", True)]
    assert session.reused
    assert stub(session) is opener.opened[0]


async def test_without_a_spare_a_session_is_opened_unconfirmed(
    make_pool: PoolFactory, opener: Opener
) -> None:
    session = await make_pool().take("alloy")
    assert not session.reused
    assert [(c.key, c.confirmed) for c in opener.opened] == [("alloy", False)]


async def test_a_clean_session_is_kept_and_any_other_closed(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    first = await used(pool)
    assert (await used(pool)) is first
    failed = await pool.take("alloy")  # not reusable: its response did not complete
    pool.give_back(failed)
    await eventually(lambda: stub(failed).closed)
    assert (await pool.take("alloy")) is not failed
    assert len(opener.opened) == 2


async def test_sessions_are_kept_per_key_and_taken_in_turn(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    one, two = await pool.take("alloy"), await pool.take("alloy")
    marin = await pool.take("marin")
    for session in (one, two, marin):
        session.reusable = True
        pool.give_back(session)
    assert (await pool.take("alloy")) is one  # idle longest
    assert (await pool.take("marin")) is marin
    assert (await pool.take("alloy")) is two
    assert len(opener.opened) == 3


async def test_an_idle_session_the_server_ends_is_replaced(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    session = await used(pool)
    expired = RealtimeError(message="Your session hit the maximum duration of 60 minutes.",
                            type="invalid_request_error", code="session_expired")  # fmt: skip
    stub(session).events.put_nowait(RealtimeErrorEvent(error=expired, event_id="e", type="error"))
    await eventually(lambda: stub(session).closed and len(opener.opened) == 2)
    replacement = await pool.take("alloy")
    assert stub(replacement) is opener.opened[1]
    assert opener.opened[1].confirmed


async def test_an_idle_session_whose_connection_closes_is_replaced(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    session = await used(pool)
    stub(session).events.put_nowait(ConnectionClosedOK(None, None))
    await eventually(lambda: len(opener.opened) == 2)
    assert (await pool.take("alloy")) is not session


async def test_idle_sessions_beyond_the_spare_close_after_a_while(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(idle_timeout=0.1)
    taken = [await pool.take("alloy") for _ in range(3)]
    for session in taken:
        session.reusable = True
        pool.give_back(session)
    await eventually(lambda: sum(c.closed for c in opener.opened) == 2)
    await asyncio.sleep(0.25)  # the last one is the spare: kept however long it waits
    assert sum(c.closed for c in opener.opened) == 2
    assert len(opener.opened) == 3  # and none was opened to replace them


async def test_at_most_max_idle_are_kept(make_pool: PoolFactory, opener: Opener) -> None:
    pool = make_pool(max_idle=2)
    taken = [await pool.take("alloy") for _ in range(3)]
    for session in taken:
        session.reusable = True
        pool.give_back(session)
    await eventually(lambda: stub(taken[0]).closed)
    assert not stub(taken[1]).closed
    assert not stub(taken[2]).closed


async def test_an_old_session_is_retired_and_replaced(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool(max_age=0.1)
    session = await used(pool)
    # Retired, and replaced (the replacement is retired in turn, and so on).
    await eventually(lambda: stub(session).closed and len(opener.opened) >= 2)
    old = await pool.take("alloy")
    await asyncio.sleep(0.15)
    old.reusable = True
    pool.give_back(old)  # too old to keep, even after a clean response
    await eventually(lambda: stub(old).closed)


async def test_a_failed_spare_is_logged_and_the_request_opens_its_own(
    make_pool: PoolFactory, opener: Opener
) -> None:
    opener.failure = ProviderError(ErrorCode.PROVIDER_AUTH, "Refused.", stage=Stage.TTS)
    with capture_logs() as logs:
        pool = make_pool()
        pool.refill("alloy")
        await eventually(lambda: logs)
    assert logs == [
        {
            "event": "realtime.session_open_failed",
            "log_level": "warning",
            "pool": "test",
            "key": "alloy",
            "error": "Refused.",
        }
    ]
    with pytest.raises(ProviderError, match="Refused"):
        await pool.take("alloy")
    opener.failure = None
    assert not (await pool.take("alloy")).reused


async def test_aclose_closes_every_session_and_ends_every_task(
    make_pool: PoolFactory, opener: Opener
) -> None:
    pool = make_pool()
    idle = await used(pool)
    busy = await pool.take("alloy")
    opener.delay = 10.0
    pool.refill("alloy")  # an opener under way
    waiting = asyncio.create_task(pool.take("alloy"))
    await asyncio.sleep(0.01)
    await pool.aclose()
    assert stub(idle).closed
    assert stub(busy).closed
    with pytest.raises(PoolClosedError):
        await waiting
    pool.give_back(busy)  # its holder, done late: nothing left to do
    with pytest.raises(PoolClosedError):
        await pool.take("alloy")
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others
