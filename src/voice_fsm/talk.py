"""A one-turn client for the server's WebSocket: send a recording, collect the spoken reply.

`talk()` is what `voice-fsm talk` runs; tests and benchmarks call it directly. Problems with
the connection or the protocol raise `TalkError`; an ``error`` event from the server is a
normal outcome and comes back in `TalkResult.error`.

Beside it: `server_address` (where the server is), `wav_files` (the question and the reply as
WAV files) and `talk_result` (what a turn gives back); their names can be imported from here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, bytes_for_ms
from voice_fsm.cli_parser import WAV_FORMATS
from voice_fsm.events import (
    ErrorEvent,
    InputAudioStart,
    InputAudioStop,
    ResponseDelta,
    ResponseDone,
    ServerEvent,
    SessionCreated,
    StateChanged,
    TranscriptDeltaEvent,
    TranscriptDoneEvent,
    TurnMetrics,
    server_event_adapter,
)
from voice_fsm.server_address import (
    WS_PATH,
    ServerAddress,
    client_host,
    default_url,
    has_token,
    shown_url,
    websocket_url,
)
from voice_fsm.talk_result import TalkError, TalkResult, summary_lines
from voice_fsm.wav_files import CONVERT, decode_wav, load_wav, save_wav

__all__ = [
    "CONVERT",
    "FRAME_MS",
    "WAV_FORMATS",
    "WS_PATH",
    "ServerAddress",
    "TalkError",
    "TalkResult",
    "client_host",
    "decode_wav",
    "default_url",
    "iter_frames",
    "load_wav",
    "save_wav",
    "shown_url",
    "summary_lines",
    "talk",
    "websocket_url",
]

FRAME_MS = 40
_KNOWN_TYPES = frozenset(
    str(model.model_fields["type"].default) for model in get_args(get_args(ServerEvent)[0])
)


def iter_frames(pcm: bytes, frame_ms: int = FRAME_MS) -> Iterator[bytes]:
    """Split PCM16 24 kHz mono into frames of `frame_ms` (the last one may be shorter)."""
    size = bytes_for_ms(frame_ms)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


# ---------------------------------------------------------------- the turn


REFUSAL_HINTS = {
    401: (
        " (a key is needed: --api-key, or the VOICE_FSM_AUTH__API_KEYS environment variable;"
        " talk does not take keys from .env)"
    ),
    403: " (this Host or Origin is not allowed)",
    503: " (the server is full or shutting down; try again shortly)",
}
TOKEN_REFUSED_HINT = " (the token is wrong, expired or already used: mint a new one)"


async def talk(
    url: str,
    pcm: bytes,
    *,
    realtime: bool = False,
    time_limit: float = 30.0,
    frame_ms: int = FRAME_MS,
    api_key: str | None = None,
    ssl: Any = None,
) -> TalkResult:
    """Run one push-to-talk turn: send `pcm` (PCM16 24 kHz mono), collect the reply.

    Sends the audio in `frame_ms` frames, as fast as possible or, with `realtime`, at the
    pace of speech. Returns at ``turn.metrics`` or at an ``error`` event; raises `TalkError`
    if the server cannot be reached, closes the connection, or `time_limit` seconds pass
    (plus the audio's duration with `realtime`, the time its sending takes).
    """
    if realtime:
        time_limit += len(pcm) / (BYTES_PER_SAMPLE * SAMPLE_RATE)
    waiting_for = "the connection"
    shown = shown_url(url)
    options: dict[str, Any] = {}
    if ssl is not None:
        if not url.lower().startswith("wss://"):
            raise TalkError(f"a CA certificate is for wss:// URLs, not {shown}")
        options["ssl"] = ssl  # wss:// without one: the system's trusted CAs
    try:
        async with asyncio.timeout(time_limit):
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
            async with connect(
                url, open_timeout=None, max_size=None, additional_headers=headers, **options
            ) as ws:
                waiting_for = "session.created"
                first = await _next_event(ws, None)
                if not isinstance(first, SessionCreated):
                    raise TalkError(f"expected session.created first, got {first.type}")
                result = TalkResult(session=first)

                await ws.send(InputAudioStart(type="input_audio.start").model_dump_json())
                waiting_for = "the recording state"
                while True:
                    event = await _next_event(ws, result)
                    if isinstance(event, ErrorEvent):
                        result.error = event
                        return result
                    if isinstance(event, StateChanged) and event.state == "recording":
                        result.turn = event.turn
                        break

                waiting_for = "the audio to be sent"
                await _send_audio(ws, pcm, realtime=realtime, frame_ms=frame_ms)
                await ws.send(InputAudioStop(type="input_audio.stop").model_dump_json())
                result.stop_sent_at = time.perf_counter()

                waiting_for = "turn.metrics"
                await _collect_reply(ws, result)
                return result
    except TimeoutError as err:
        raise TalkError(f"timed out after {time_limit:.3g} s waiting for {waiting_for}") from err
    except InvalidURI as err:
        raise TalkError(f"invalid WebSocket URL {shown!r}: {err.msg}") from err
    except InvalidStatus as err:
        status = err.response.status_code
        hint = REFUSAL_HINTS.get(status, "")
        if status == 404 and urlsplit(url).path != WS_PATH:
            hint = f" (the server's WebSocket is at {WS_PATH})"
        if status == 401 and has_token(url) and api_key is None:
            hint = TOKEN_REFUSED_HINT
        raise TalkError(f"{shown} refused the WebSocket connection: HTTP {status}{hint}") from err
    except InvalidHandshake as err:
        raise TalkError(f"{shown} refused the WebSocket connection: {err}") from err
    except ConnectionClosed as err:
        why = f" ({err.rcvd.code} {err.rcvd.reason})".rstrip() if err.rcvd else ""
        message = f"{shown} closed the connection{why} while waiting for {waiting_for}"
        raise TalkError(message) from err
    except OSError as err:
        raise TalkError(f"cannot connect to {shown}: {err.strerror or err}") from err


async def _send_audio(ws: ClientConnection, pcm: bytes, *, realtime: bool, frame_ms: int) -> None:
    start = time.perf_counter()
    for index, frame in enumerate(iter_frames(pcm, frame_ms)):
        if realtime:
            delay = start + index * frame_ms / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(frame)


async def _collect_reply(ws: ClientConnection, result: TalkResult) -> None:
    transcript_deltas: list[str] = []
    reply_deltas: list[str] = []
    audio = bytearray()
    try:
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                if not audio:
                    result.first_audio_at = time.perf_counter()
                audio.extend(message)
                continue
            event = _parse(message)
            if event is None:
                continue
            result.events.append(event)
            if isinstance(event, TranscriptDeltaEvent):
                transcript_deltas.append(event.text)
                result.transcript = "".join(transcript_deltas)
            elif isinstance(event, TranscriptDoneEvent):
                result.transcript = event.text
            elif isinstance(event, ResponseDelta):
                reply_deltas.append(event.text)
                result.reply = "".join(reply_deltas)
            elif isinstance(event, ResponseDone):
                result.reply = event.text
            elif isinstance(event, TurnMetrics):
                result.metrics = event
                return
            elif isinstance(event, ErrorEvent):
                result.error = event
                return
    finally:
        result.audio = bytes(audio)


async def _next_event(ws: ClientConnection, result: TalkResult | None) -> ServerEvent:
    """The next JSON event, skipping binary frames and event types this client doesn't know."""
    while True:
        message = await ws.recv()
        if isinstance(message, bytes):
            continue
        event = _parse(message)
        if event is None:
            continue
        if result is not None:
            result.events.append(event)
        return event


def _parse(message: str) -> ServerEvent | None:
    try:
        return server_event_adapter.validate_json(message)
    except ValidationError as err:
        try:
            kind = json.loads(message).get("type")
        except (ValueError, AttributeError):
            kind = None
        if isinstance(kind, str) and kind not in _KNOWN_TYPES:
            return None  # a newer server's event: not ours to understand
        raise TalkError(f"invalid message from the server: {message[:200]!r} ({err})") from err
