"""How a Realtime text-to-speech response ends: cancelled by its id, failed because its session
was lost (worth a new session) or because the request failed, or done without audio (and why).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import ResponseDoneEvent
from openai.types.websocket_connection_options import WebSocketConnectionOptions
from websockets.exceptions import WebSocketException

from voice_fsm.adapters.openai.client import connection_options
from voice_fsm.adapters.openai.errors import TRANSLATED, realtime_error, translate
from voice_fsm.errors import ErrorCode, ProviderError, Stage

CANCEL_TIMEOUT = 1.0
MAX_TRANSCRIPT_CHARS = 4000
"""A response's output transcript is kept up to this: far more than a sentence read aloud."""


class OutputTranscript:
    """What a response said, from its ``response.output_audio_transcript.*`` events.

    The deltas are joined as they come; the ``.done`` event's whole transcript replaces them.
    None until either arrives: a response without a transcript is not compared."""

    def __init__(self) -> None:
        self.text: str | None = None

    def add(self, delta: str) -> None:
        self.text = ((self.text or "") + delta)[:MAX_TRANSCRIPT_CHARS]

    def done(self, transcript: str) -> None:
        self.text = transcript[:MAX_TRANSCRIPT_CHARS]


def check_done(event: ResponseDoneEvent, secrets: tuple[str, ...]) -> None:
    """``response.done`` before ``response.output_audio.done``: say why there is no audio.

    Raises `ProviderError` unless the response completed."""
    response = event.response
    if response.status == "completed":
        return
    details = response.status_details
    error = details.error if details is not None else None
    if error is not None:
        raise realtime_error(
            Stage.TTS, kind=error.type, code=error.code, message=None, secrets=secrets
        )
    reason = details.reason if details is not None else None
    raise ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"OpenAI text-to-speech ended the response as {response.status}"
        + (f" ({reason})." if reason else "."),
        stage=Stage.TTS,
    )


def speech_connection_options() -> WebSocketConnectionOptions:
    # No flow control on what the server sends. With websockets' default (16 frames), a
    # session closed with its response's audio unread (a cancelled sentence) stops reading,
    # never sees the server's close frame and closes only after its close timeout. What one
    # response sends is small enough to buffer.
    return {**connection_options(), "max_queue": None}


class SessionLost(Exception):
    """An ``error`` event about the session, not about the request (e.g. it has ended)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.message)
        self.error = error


def is_session_lost(err: BaseException) -> bool:
    """Whether `err` says the session is gone (worth a new one), not that the request failed.

    A timeout is not: a slow provider would make the user wait twice.
    """
    if isinstance(err, SessionLost):
        return True
    return isinstance(err, WebSocketException | OSError) and not isinstance(err, TimeoutError)


def lost_reason(err: BaseException, secrets: tuple[str, ...]) -> str:
    if isinstance(err, SessionLost):
        return err.error.message
    return translate(err, Stage.TTS, secrets).message


async def cancel_response(connection: AsyncRealtimeConnection, response_id: str | None) -> None:
    """Ask the server to stop generating; an out-of-band response is cancelled by its id."""
    with suppress(*TRANSLATED):
        async with asyncio.timeout(CANCEL_TIMEOUT):
            if response_id is not None:
                await connection.response.cancel(response_id=response_id)
            else:
                await connection.response.cancel()
