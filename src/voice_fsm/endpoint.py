"""The WebSocket endpoint: one `Session` per connection, and the server's drain.

The receive loop only parses and queues; the session's driver task does the rest. Four things
end a connection, whichever comes first: the client leaves (or is dropped for not reading), the
driver ends, the receive loop ends, or the connection's watch decides to close it (idle, too
long, or the server draining), which waits for a turn in flight to finish first. Each of them
ends the others, so nothing is left waiting on a connection that is gone.

None of them ends on its own but by a bug: one that raises is logged with its traceback
(`session.crashed`), the client is told with one `internal-error`, and the connection closes
with 1011; the server goes on serving the other sessions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from voice_fsm.access import deny
from voice_fsm.admission import SessionSlots
from voice_fsm.connection import ClientConnection
from voice_fsm.errors import ErrorCode, InputError, Stage
from voice_fsm.events import ErrorEvent, ServerEvent, client_event_adapter
from voice_fsm.logging_setup import get_logger
from voice_fsm.machine import State
from voice_fsm.providers import Pipeline
from voice_fsm.rate_limit import TokenBucket
from voice_fsm.session import Session, Submission
from voice_fsm.settings import Settings
from voice_fsm.turn_record import TurnObserver

log = get_logger()

CLOSE_IDLE = (1000, "idle timeout")
CLOSE_TOO_LONG = (1008, "session time limit reached")
CLOSE_SHUTDOWN = (1001, "server shutting down")
CLOSE_INTERNAL = (1011, "internal error")
CRASH_MESSAGE = "The server failed on an internal error and closed the session."


def parse_text(text: str, max_bytes: int) -> Submission:
    """A client's JSON text frame as a command, or the `invalid-message` error it deserves."""
    if len(text) > max_bytes or len(text.encode()) > max_bytes:
        return InputError(ErrorCode.INVALID_MESSAGE, f"Message larger than {max_bytes} bytes.")
    try:
        return client_event_adapter.validate_json(text)
    except ValidationError as err:
        return InputError(ErrorCode.INVALID_MESSAGE, describe_validation_error(err))


def describe_validation_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        return "Not valid JSON."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"Unknown or missing message type: {first.get('input', {}).get('type')!r}."[:300]
    where = ".".join(str(part) for part in first["loc"][1:]) or "message"
    return f"Invalid {where}: {first['msg']}."[:300]


def _failure(task: asyncio.Task[Any]) -> BaseException | None:
    """What a finished task raised, other than being cancelled."""
    return None if task.cancelled() else task.exception()


class FrontEnd(Protocol):
    """A protocol spoken over one connection: how the session's events go out (`send`) and
    how a client's message becomes the session's input (`receive`)."""

    async def send(self, event: ServerEvent | bytes) -> None: ...

    async def receive(self, session: Session, message: str | bytes) -> None: ...

    async def attach(self, session: Session) -> None:
        """Before the session runs: what the protocol asks of it first."""


FrontEndFactory = Callable[[WebSocket, ClientConnection], FrontEnd]


class ProtocolV1:
    """Protocol v1: the session's events as they are, commands parsed from JSON text frames,
    audio as binary frames."""

    def __init__(self, connection: ClientConnection, max_text_bytes: int) -> None:
        self.send = connection.send
        self._max_text_bytes = max_text_bytes

    async def attach(self, session: Session) -> None:
        pass

    async def receive(self, session: Session, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await session.submit(message)
        else:
            await session.submit(parse_text(message, self._max_text_bytes))


def client_address(websocket: WebSocket) -> str:
    client = websocket.scope.get("client")
    return str(client[0]) if client else "unknown"


class SessionEndpoint:
    def __init__(self, pipeline: Pipeline, settings: Settings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        limits = settings.limits
        self.sessions: set[Session] = set()
        self.slots = SessionSlots(limits.max_sessions, limits.max_sessions_per_client)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._draining = asyncio.Event()
        self._cut = asyncio.Event()
        self.ended: dict[str, int] = {"drained": 0, "cut": 0}
        self.observers: list[TurnObserver] = []
        """Told of every finished turn (metrics, the dashboard, traces)."""

    @property
    def draining(self) -> bool:
        return self.slots.draining

    async def handle(self, websocket: WebSocket, front_end: FrontEndFactory | None = None) -> None:
        """Serve one connection in protocol v1, or in the protocol `front_end` makes."""
        address = client_address(websocket)
        refusal = self.slots.take(address)
        if refusal is not None:
            log.info("session.refused", reason=refusal.reason, client=address)
            response = JSONResponse(
                {"error": refusal.reason},
                status_code=503,
                headers={"Retry-After": str(refusal.retry_after_s)},
            )
            await deny(websocket.scope, websocket.receive, websocket.send, response)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                await websocket.accept()
            except Exception:  # the client left during the handshake
                return
            await self._serve(websocket, front_end or self._protocol_v1)
        finally:
            self._handlers.discard(task)
            self.slots.give_back(address)

    def _protocol_v1(self, _websocket: WebSocket, connection: ClientConnection) -> FrontEnd:
        return ProtocolV1(connection, self.settings.limits.max_text_bytes)

    async def _serve(self, websocket: WebSocket, make_front_end: FrontEndFactory) -> None:
        limits = self.settings.limits
        connection = ClientConnection(
            websocket, send_timeout=limits.send_timeout_s, log=lambda: session.log
        )
        front_end = make_front_end(websocket, connection)
        session = Session(self.pipeline, self.settings, front_end.send, observers=self.observers)
        await front_end.attach(session)
        self.sessions.add(session)
        driver = asyncio.create_task(session.run(), name=f"session-{session.id}")
        receiver = asyncio.create_task(self._receive(websocket, connection, session, front_end))
        watch = asyncio.create_task(self._watch(connection, session))
        gone = asyncio.create_task(connection.gone.wait())
        tasks = {driver, receiver, watch, gone}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            close = watch.result() if watch.done() and _failure(watch) is None else None
            if close is None and driver.done() and not connection.gone.is_set():
                close = CLOSE_INTERNAL  # the driver cannot end on its own but by a bug
            if close == CLOSE_SHUTDOWN and session.state != State.IDLE:
                session.end_outcome = "shutdown"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            self.sessions.discard(session)
        crashes = [crash for task in (driver, receiver, watch) if (crash := _failure(task))]
        for crash in crashes:
            session.log.error("session.crashed", exc_info=crash)
        if crashes:
            close = CLOSE_INTERNAL
            await front_end.send(
                ErrorEvent(
                    code=ErrorCode.INTERNAL,
                    stage=Stage.SERVER,
                    message=CRASH_MESSAGE,
                    retryable=False,
                    turn=session.turn.number,
                )
            )
        if close is not None:
            await connection.close(*close)
            if close == CLOSE_SHUTDOWN:
                self.ended["cut" if session.end_outcome == "shutdown" else "drained"] += 1
        session.log.info("connection.closed", reason=connection.gone_reason or close)

    async def _receive(
        self,
        websocket: WebSocket,
        connection: ClientConnection,
        session: Session,
        front_end: FrontEnd,
    ) -> None:
        limits = self.settings.limits
        # Fast enough for 10 ms audio frames, slow enough that a flood cannot starve others.
        pace = TokenBucket(limits.messages_per_s, burst=limits.messages_per_s)
        while True:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                break
            if message["type"] == "websocket.disconnect":
                break
            connection.last_message_at = time.monotonic()
            if message.get("bytes") is not None:
                await front_end.receive(session, message["bytes"])
            elif message.get("text") is not None:
                await front_end.receive(session, message["text"])
            await pace.wait()
        connection.lost("disconnected")

    async def _watch(self, connection: ClientConnection, session: Session) -> tuple[int, str]:
        """The close a session is due, once it is due: draining, idle or too long. A turn the
        server is working on finishes first (when draining, up to the drain time)."""
        limits = self.settings.limits
        ends_at = time.monotonic() + limits.max_session_s
        draining = asyncio.create_task(self._draining.wait())
        try:
            while not self._draining.is_set():
                now = time.monotonic()
                idle_at = connection.last_message_at + limits.idle_timeout_s
                if now >= ends_at or now >= idle_at:
                    # Not merely idle: the turn's last events (turn.metrics) may still be on
                    # their way.
                    await session.wait_until(
                        lambda: session.at_rest or session.state == State.RECORDING
                    )
                    if time.monotonic() >= ends_at:
                        return CLOSE_TOO_LONG
                    if time.monotonic() >= connection.last_message_at + limits.idle_timeout_s:
                        return CLOSE_IDLE
                    continue
                await asyncio.wait({draining}, timeout=min(ends_at, idle_at) - now)
        finally:
            draining.cancel()
        cut = asyncio.create_task(self._cut.wait())
        rest = asyncio.create_task(session.wait_until(lambda: session.at_rest))
        try:
            await asyncio.wait({cut, rest}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            rest.cancel()
        return CLOSE_SHUTDOWN

    async def drain(self, seconds: float) -> None:
        """Stop taking sessions, let turns in flight end (up to `seconds`), then close every
        session with 1001."""
        self.slots.draining = True
        self._draining.set()
        handlers = set(self._handlers)
        log.info("server.draining", sessions=len(handlers), drain_s=seconds)
        if handlers:
            await asyncio.wait(handlers, timeout=seconds)
        self._cut.set()
        if self._handlers:  # closing each takes at most CLOSE_TIMEOUT_S
            await asyncio.wait(set(self._handlers), timeout=1.5)
        log.info(
            "server.drained",
            drained=self.ended["drained"],
            cut=self.ended["cut"],
            left=len(self._handlers),
        )
