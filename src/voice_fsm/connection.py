"""One client's WebSocket as its session sees it.

Sending never raises: a client that went away (at any moment, mid-frame included) is a normal
end, so a send to it does nothing and sets `gone`, and the endpoint ends the session. A send
that cannot complete within the send timeout (a client that stopped reading while the server
has audio for it) aborts the connection: the transport is dropped with its buffer, since
closing it politely would wait for the same client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from voice_fsm.access import TRANSPORT_KEY
from voice_fsm.events import ServerEvent

CLOSE_TIMEOUT_S = 1.0
"""How long a close frame may take to go out before the connection is dropped instead."""
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
"""SO_LINGER on, with no time to linger: closing the socket resets the connection."""


class ClientConnection:
    def __init__(
        self, websocket: WebSocket, *, send_timeout: float, log: Callable[[], Any]
    ) -> None:
        self.websocket = websocket
        self.send_timeout = send_timeout
        self.log = log
        """The logger to use now: the session's, bound to its turn of the moment."""
        self.gone = asyncio.Event()
        self.gone_reason: str | None = None
        self.last_message_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._transport: asyncio.Transport | None = websocket.scope.get(TRANSPORT_KEY)

    async def send(self, event: ServerEvent | bytes | str) -> None:
        """An event as protocol v1 JSON, audio as a binary frame, or a text frame as is."""
        if self.gone.is_set():
            return
        data = event if isinstance(event, bytes | str) else event.model_dump_json()
        async with self._lock:
            if self.gone.is_set() or self.websocket.application_state != WebSocketState.CONNECTED:
                return
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.send_timeout):
                    if isinstance(data, bytes):
                        await self.websocket.send_bytes(data)
                    else:
                        await self.websocket.send_text(data)
            except TimeoutError:
                self.abort("send-timeout", blocked_s=round(time.monotonic() - started, 3))
            except Exception:  # the client went away while we were sending to it
                self.lost("disconnected")

    async def close(self, code: int, reason: str) -> None:
        """Close with `code` and `reason`, or drop the connection if that cannot go out."""
        if self.gone.is_set():
            return
        try:
            async with self._lock, asyncio.timeout(CLOSE_TIMEOUT_S):
                if self.websocket.application_state == WebSocketState.CONNECTED:
                    await self.websocket.close(code, reason)
        except TimeoutError:
            self.abort("close-timeout")
        except Exception:
            self.lost("disconnected")

    def lost(self, reason: str) -> None:
        if not self.gone.is_set():
            self.gone_reason = reason
            self.gone.set()

    def abort(self, reason: str, **details: Any) -> None:
        """Drop the connection at once, without sending what is still buffered."""
        if self.gone.is_set():
            return
        self.log().warning("connection.aborted", reason=reason, **details)
        self.lost(reason)
        if self._transport is not None:
            # A plain close would leave the kernel trying to deliver what it already holds
            # for this client (megabytes, to a client that does not read) long after we let
            # go: a reset makes it drop that too.
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            self._transport.abort()  # also when closing: close() waits for the buffer to drain
        # Under another ASGI server, the endpoint's own close is all there is.
