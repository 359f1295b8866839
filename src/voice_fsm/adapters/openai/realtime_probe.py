"""Whether a compatible server has Realtime transcription (``VOICE_FSM_STT__LIVE=auto`` at a
base URL): asked once per process, by the first live turn's own connection, so the question
costs no extra connection and the user is talking while it is answered.

What a server without it answers, and how each is read:

- the WebSocket upgrade refused: 404 (OpenAI's shape for an unknown URL, llama.cpp's server and
  most HTTP servers), 403 (Starlette and FastAPI for a WebSocket to no route, so vLLM and
  speaches builds without it), 400, 405 or 501; or an HTTP answer that is no upgrade at all;
- the connection accepted, and the ``session.update`` of a transcription session answered with
  an ``error`` event (an unknown model, intent or session type) or a close instead of
  ``session.updated``.

Not an answer, so the next turn asks again: a timeout, 408, 429 or another 5xx, a refused or
reset TCP connection (the base URL's host itself is down: the upload fails as well), a proxy's
refusal, or an error event for a rate limit or a server error.
"""

from __future__ import annotations

import asyncio

import httpx
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHeader,
    InvalidMessage,
    InvalidStatus,
)

from voice_fsm.adapters.openai.errors import realtime_error, translating
from voice_fsm.errors import ErrorCode, ProviderError, Stage

PASSING_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Refusals of the upgrade that say nothing about the endpoint: ask again next turn."""
PASSING_CODES = frozenset({ErrorCode.PROVIDER_RATE_LIMITED, ErrorCode.PROVIDER_UNAVAILABLE})


def lacks_realtime(err: ProviderError) -> str | None:
    """Why `err`, raised opening the connection, shows the server has no Realtime
    transcription; None when it does not tell."""
    cause = err.__cause__
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        if status in PASSING_STATUSES:
            return None
        return f"the WebSocket upgrade was answered with HTTP {status}"
    if isinstance(cause, InvalidMessage | InvalidHeader):
        return f"it did not answer the WebSocket upgrade ({err.message})"
    if isinstance(cause, ConnectionClosed):
        return "it closed the connection instead of opening a transcription session"
    return None


async def confirm(
    connection: AsyncRealtimeConnection, *, within_s: float, secrets: tuple[str, ...]
) -> str | None:
    """Wait for the server to accept the transcription session (``session.updated``): None
    when it does, else why it has none. Raises `ProviderError` when it does not tell (a
    timeout, a rate limit, a server error)."""
    with translating(Stage.STT, secrets):
        async with asyncio.timeout(within_s):
            while True:
                event = await connection.recv()
                if event.type == "session.updated":
                    return None
                if isinstance(event, RealtimeErrorEvent):
                    error = event.error
                    refused = realtime_error(
                        Stage.STT,
                        kind=error.type,
                        code=error.code,
                        message=error.message,
                        secrets=secrets,
                    )
                    if refused.code in PASSING_CODES:
                        raise refused
                    said = refused.message.partition(" failed: ")[2] or refused.message
                    return f"it refused a transcription session: {said}"


def server_name(base_url: str) -> str:
    """The base URL as a log may show it: without a user name or password in it."""
    url = httpx.URL(base_url)
    return str(url.copy_with(username=None, password=None)) if url.userinfo else base_url


def unavailable(base_url: str, reason: str) -> ProviderError:
    """The error that ends live transcription at `base_url` for the process."""
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"The OpenAI-compatible server at {server_name(base_url)} has no Realtime "
        f"transcription endpoint: {reason}. Speech-to-text sends each completed recording "
        "instead from now on (VOICE_FSM_STT__LIVE=false skips this check).",
        stage=Stage.STT,
    )
