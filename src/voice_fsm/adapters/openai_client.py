"""One `AsyncOpenAI` client per stage, configured from that stage's settings."""

from __future__ import annotations

import httpx
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from voice_fsm.adapters.connection_reuse import ConnectionReuseTransport
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
