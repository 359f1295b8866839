"""Open, configured Realtime sessions kept ready, so that a request skips the handshake.

A new Realtime session costs TCP, TLS, the WebSocket upgrade, ``session.created`` and a
``session.update``: 100-300 ms against OpenAI, before a response can even be asked for. A
session runs one response at a time, so `RealtimeSessionPool` hands each request a session
of its own and keeps the ones that are done:

- `take` gives out the session idle longest (sessions in turn stay alive), or waits for one
  being opened, or opens one there and then.
- `give_back` keeps a session whose response is over (nothing of it left to come), and
  closes any other.
- `refill` opens a spare in the background when none of that key is idle or on its way, so
  the next request finds one ready; it is also the warm-up.
- While idle, a session is watched: one the server closes or ends (any ``error`` event while
  nothing was asked of it, e.g. ``session_expired``) is dropped and replaced, one older than
  `max_age` is retired before the server's own limit could cut a response short, and one idle
  for `idle_timeout` is closed unless it is the last spare. At most `max_idle` stay idle.
- `aclose` closes every session, idle or in use, and ends every task it started.

Sessions are keyed by what a session cannot change once it has spoken: its voice.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent

from voice_fsm.adapters.openai.client import close_quietly
from voice_fsm.adapters.openai.errors import TRANSLATED
from voice_fsm.logging_setup import get_logger

SPARES = 1
"""Idle sessions kept however long they wait: the next request's."""
MAX_IDLE = 16
"""Idle sessions kept at most; beyond, the one idle longest is closed. Concurrent sentences
of a busy server each need their own, so this is more than one."""
IDLE_TIMEOUT_S = 120.0
"""An idle session beyond the spares is closed after this long unused."""
MAX_SESSION_AGE_S = 55 * 60.0
"""OpenAI ends a Realtime session after 60 minutes: a session is retired before that, so no
sentence is cut short by the end of its session."""

Opener = Callable[[str, bool], Awaitable[AsyncRealtimeConnection]]
"""Opens a session for a key. With ``True`` it returns once the server has confirmed the
session's configuration; with ``False`` at once, the configuration on its way (the request
that follows on the same connection is then answered after it)."""


@dataclass(eq=False)
class PooledSession:
    key: str
    connection: AsyncRealtimeConnection
    opened_at: float
    """The event loop's time when it was opened."""
    reused: bool = False
    """Opened before the request that holds it: a spare, or used before."""
    reusable: bool = False
    """Set by the holder when its response is over, nothing of it left to come on the
    connection; `give_back` keeps it then."""
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class PoolClosedError(RuntimeError):
    """`take` on a pool that `aclose` has closed."""


class RealtimeSessionPool:
    def __init__(
        self,
        opener: Opener,
        *,
        name: str,
        spares: int = SPARES,
        max_idle: int = MAX_IDLE,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_age: float | None = None,
    ) -> None:
        self._opener = opener
        self._spares = spares
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._max_age = MAX_SESSION_AGE_S if max_age is None else max_age
        self._idle: list[PooledSession] = []  # idle longest first
        self._live: set[AsyncRealtimeConnection] = set()  # every connection not yet closed
        self._opening: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = False
        self._log = get_logger(pool=name)

    async def take(self, key: str, *, fresh: bool = False) -> PooledSession:
        """A session of `key` for one request; `fresh`: a newly opened one, never a kept one.

        Raises what the opener raises when a new session cannot be had.
        """
        while not fresh:
            self._check_open()
            session = self._pop_idle(key)
            if session is not None:
                return await self._hand_out(session)
            if not self._opening[key]:
                break
            changed = self._changed  # an opener of `key` is under way: its session is sooner
            await changed.wait()
        self._check_open()
        session = await self._connect(key, confirmed=False)
        if self._closed:
            await self._close(session)
            self._check_open()
        return session

    def give_back(self, session: PooledSession) -> None:
        """The holder is done with `session`: kept if it is `reusable`, else closed."""
        if self._closed:  # aclose has closed its connection
            return
        if session.reusable and not self._too_old(session):
            session.reusable = False
            self._add_idle(session)
        else:
            self._spawn(self._close(session), "close")

    def refill(self, key: str) -> None:
        """Open a spare of `key` in the background unless one is idle or on its way."""
        if self._closed or self._opening[key] or any(s.key == key for s in self._idle):
            return
        self._opening[key] += 1
        self._spawn(self._open_spare(key), "open")

    async def aclose(self) -> None:
        self._closed = True
        self._notify()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._idle.clear()
        live, self._live = list(self._live), set()
        await asyncio.gather(*(close_quietly(connection) for connection in live))

    # ------------------------------------------------------------ opening and closing

    async def _connect(self, key: str, *, confirmed: bool) -> PooledSession:
        loop = asyncio.get_running_loop()
        connection = await self._opener(key, confirmed)
        self._live.add(connection)
        return PooledSession(key, connection, opened_at=loop.time())

    async def _open_spare(self, key: str) -> None:
        try:
            session = await self._connect(key, confirmed=True)
        except Exception as err:  # a spare is a bonus: the request opens its own
            message = getattr(err, "message", None) or str(err) or type(err).__name__
            self._log.warning("realtime.session_open_failed", key=key, error=message)
            return
        finally:
            self._opening[key] -= 1
            self._notify()
        if self._closed:
            await self._close(session)
        else:
            self._add_idle(session)

    async def _close(self, session: PooledSession) -> None:
        if session.connection in self._live:
            await close_quietly(session.connection)
            self._live.discard(session.connection)  # after: aclose closes one left half-closed

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("The Realtime session pool is closed.")

    # ------------------------------------------------------------ idle sessions

    def _pop_idle(self, key: str) -> PooledSession | None:
        for index, session in enumerate(self._idle):
            if session.key == key and not self._too_old(session):  # its watcher retires it
                del self._idle[index]
                return session
        return None

    async def _hand_out(self, session: PooledSession) -> PooledSession:
        """Stop watching `session` (its watcher must not read any more) and lend it out."""
        session.reused = True
        watcher, session.watcher = session.watcher, None
        if watcher is not None:
            watcher.cancel()
            try:
                await asyncio.wait([watcher])
            except BaseException:
                self.give_back(session)
                raise
        return session

    def _add_idle(self, session: PooledSession) -> None:
        self._idle.append(session)
        session.watcher = self._spawn(self._watch(session), "watch")
        while len(self._idle) > self._max_idle:
            self._retire(self._idle[0])
        self._notify()

    def _retire(self, session: PooledSession) -> None:
        """Close an idle session (from outside its watcher)."""
        self._idle.remove(session)
        if session.watcher is not None:
            session.watcher.cancel()
        self._spawn(self._close(session), "close")

    async def _watch(self, session: PooledSession) -> None:
        """While `session` is idle: notice its end, its age and a long idleness."""
        loop = asyncio.get_running_loop()
        retire_at = session.opened_at + self._max_age
        why = "closed by the server"
        try:
            while True:
                idle_until = loop.time() + self._idle_timeout
                try:
                    async with asyncio.timeout_at(min(idle_until, retire_at)):
                        event = await session.connection.recv()
                except TimeoutError:
                    if loop.time() >= retire_at:
                        why = "old"
                        break
                    if len(self._idle) > self._spares:
                        why = "idle"
                        break
                    continue
                if isinstance(event, RealtimeErrorEvent):
                    why = f"ended by the server ({event.error.code or event.error.type})"
                    break
        except TRANSLATED:
            pass
        if session not in self._idle:  # handed out meanwhile: no longer ours to watch
            return
        self._idle.remove(session)
        session.watcher = None
        self._log.info("realtime.session_dropped", key=session.key, reason=why)
        if why != "idle":
            self.refill(session.key)
        await self._close(session)

    def _too_old(self, session: PooledSession) -> bool:
        return asyncio.get_running_loop().time() >= session.opened_at + self._max_age

    # ------------------------------------------------------------ tasks

    def _spawn(self, coroutine: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        # A context of its own: the session belongs to no turn or conversation.
        task = asyncio.create_task(
            coroutine, name=f"realtime-session-{what}", context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
