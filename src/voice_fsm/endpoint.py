"""The WebSocket endpoint: one `Session` per connection.

The receive loop only parses and queues; the session's driver task does the rest. Leaving
(or losing) the connection cancels the driver, which cancels the turn and its provider streams.
"""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voice_fsm.errors import ErrorCode, InputError
from voice_fsm.events import ServerEvent, client_event_adapter
from voice_fsm.logging_setup import get_logger
from voice_fsm.providers import Pipeline
from voice_fsm.session import Session, Submission
from voice_fsm.settings import Settings

log = get_logger()


def parse_text(text: str, max_bytes: int) -> Submission:
    """A client's JSON text frame as a command, or the `invalid-message` error it deserves."""
    if len(text.encode()) > max_bytes:
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


class SessionEndpoint:
    def __init__(self, pipeline: Pipeline, settings: Settings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.sessions: set[Session] = set()

    async def handle(self, websocket: WebSocket) -> None:
        await websocket.accept()
        lock = asyncio.Lock()

        async def send(event: ServerEvent | bytes) -> None:
            async with lock:
                if websocket.application_state != WebSocketState.CONNECTED:
                    return
                if isinstance(event, bytes):
                    await websocket.send_bytes(event)
                else:
                    await websocket.send_text(event.model_dump_json())

        session = Session(self.pipeline, self.settings, send)
        self.sessions.add(session)
        driver = asyncio.create_task(session.run(), name=f"session-{session.id}")
        try:
            await self._receive(websocket, session, driver)
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await driver
            self.sessions.discard(session)
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    async def _receive(
        self, websocket: WebSocket, session: Session, driver: asyncio.Task[None]
    ) -> None:
        max_bytes = self.settings.limits.max_message_bytes
        while not driver.done():
            try:
                message = await websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await session.submit(message["bytes"])
            elif message.get("text") is not None:
                await session.submit(parse_text(message["text"], max_bytes))
