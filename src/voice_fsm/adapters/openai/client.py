"""One `AsyncOpenAI` client per stage, configured from that stage's settings, and what
every Realtime connection shares."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import suppress
from typing import cast

import httpx
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from openai.types.websocket_connection_options import WebSocketConnectionOptions

from voice_fsm.adapters.openai.connection_reuse import ConnectionReuseTransport
from voice_fsm.adapters.openai.errors import TRANSLATED, translating
from voice_fsm.adapters.openai.realtime_wire import send_audio
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import Settings, StageSettings

OPENAI_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "unused"
"""Sent when no key is configured: OpenAI-compatible local servers accept any key."""

MAX_CONNECT_TIMEOUT = 5.0
KEEPALIVE_S = 120.0
"""How long an idle connection to the provider is kept for the next request. httpx's default,
5 s, is shorter than the pause between two turns of a conversation: every turn would then
open new connections, and against OpenAI a TLS handshake costs about 100 ms or more. A
connection the provider has closed meanwhile is noticed before reuse and replaced."""
CLOSE_TIMEOUT = 1.0
"""Seconds to wait for a Realtime server's close frame before dropping the connection."""


def make_openai_client(settings: Settings, stage: StageSettings) -> AsyncOpenAI:
    """A client for `stage`: its key, base_url, timeout and retry count.

    Key and base_url are always passed explicitly, so the SDK never falls back to reading
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` on its own behind the settings' back. The SDK's
    default read timeout (600 s) is far too long for a voice turn: ``stage.timeout`` bounds the
    connect and every wait between chunks.
    """
    return AsyncOpenAI(
        api_key=settings.api_key_for(stage) or PLACEHOLDER_KEY,
        base_url=settings.base_url_for(stage) or OPENAI_BASE_URL,
        timeout=httpx.Timeout(stage.timeout, connect=min(stage.timeout, MAX_CONNECT_TIMEOUT)),
        max_retries=stage.max_retries,
        http_client=DefaultAsyncHttpxClient(
            transport=ConnectionReuseTransport(
                # The SDK's own connection limits, with a longer keep-alive.
                httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(
                        max_connections=1000,
                        max_keepalive_connections=100,
                        keepalive_expiry=KEEPALIVE_S,
                    )
                )
            )
        ),
    )


def connection_options() -> WebSocketConnectionOptions:
    # websockets' own close_timeout (default 10 s) bounds close(); the SDK passes these options
    # to websockets' connect() as they are, but its TypedDict lists only some of them.
    # No permessage-deflate: base64 PCM barely compresses, and deflating every audio event
    # was a tenth of a session's CPU under load (make loadtest).
    options = {"close_timeout": CLOSE_TIMEOUT, "compression": None}
    return cast(WebSocketConnectionOptions, options)


async def append_audio(
    connection: AsyncRealtimeConnection, pcm: bytes, *, secrets: tuple[str, ...], within_s: float
) -> None:
    """Send `pcm` (PCM16 24 kHz mono) to the input audio buffer of a transcription session;
    waits only for the socket's write buffer. Raises ProviderError."""
    audio = base64.b64encode(pcm).decode("ascii")
    with translating(Stage.STT, secrets):
        async with asyncio.timeout(within_s):
            await send_audio(connection, audio)


async def close_quietly(connection: AsyncRealtimeConnection) -> None:
    """Close `connection`; a connection that is already broken is closed enough."""
    with suppress(*TRANSLATED):
        await connection.close()


async def read_events(
    connection: AsyncRealtimeConnection,
    handle: Callable[[RealtimeServerEvent], None],
    *,
    stage: Stage,
    secrets: tuple[str, ...],
    closed: str,
) -> None:
    """Hand each of the server's events to `handle` until the connection ends. Raises
    `ProviderError`: the connection failing, or the server closing it (message `closed`)."""
    with translating(stage, secrets):
        async for event in connection:
            handle(event)
    raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, closed, stage=stage)
