"""A one-turn client for the server's WebSocket: send a recording, collect the spoken reply.

`talk()` is what `voice-fsm talk` runs; tests and benchmarks call it directly. Problems with
the connection or the protocol raise `TalkError`; an ``error`` event from the server is a
normal outcome and comes back in `TalkResult.error`.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, bytes_for_ms, pcm_to_wav, wav_to_pcm16
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

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
FRAME_MS = 40
_KNOWN_TYPES = frozenset(
    str(model.model_fields["type"].default) for model in get_args(get_args(ServerEvent)[0])
)


class TalkError(Exception):
    """The turn could not be run: a bad file, no connection, a timeout, a protocol violation."""


@dataclass(slots=True)
class TalkResult:
    session: SessionCreated
    turn: int | None = None
    transcript: str = ""
    reply: str = ""
    audio: bytes = b""
    metrics: TurnMetrics | None = None
    error: ErrorEvent | None = None
    events: list[ServerEvent] = field(default_factory=list)
    stop_sent_at: float | None = None  # time.perf_counter() when input_audio.stop went out
    first_audio_at: float | None = None  # ... and when the first reply audio arrived

    @property
    def client_voice_to_voice_ms(self) -> int | None:
        """End of the user's audio to the first reply audio, as this client saw it."""
        if self.stop_sent_at is None or self.first_audio_at is None:
            return None
        return round((self.first_audio_at - self.stop_sent_at) * 1000)

    @property
    def ok(self) -> bool:
        return self.error is None and self.metrics is not None

    def to_json(self) -> dict[str, Any]:
        """The summary `voice-fsm talk --json` prints."""
        return {
            "session_id": self.session.session_id,
            "turn": self.turn,
            "transcript": self.transcript,
            "reply": self.reply,
            "metrics": self.metrics.model_dump(exclude={"type"}) if self.metrics else None,
            "audio_bytes": len(self.audio),
            "error": self.error.model_dump(mode="json", exclude={"type"}) if self.error else None,
        }


# ---------------------------------------------------------------- audio


def load_wav(path: str | Path) -> bytes:
    """Read a PCM WAV file of any rate, width and channel count as PCM16 24 kHz mono."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TalkError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return wav_to_pcm16(data, SAMPLE_RATE)
    except (wave.Error, EOFError, ValueError) as err:
        raise TalkError(f"cannot read {path} as a PCM WAV file: {err}") from err


def save_wav(path: str | Path, pcm: bytes) -> None:
    """Write PCM16 24 kHz mono as a WAV file."""
    try:
        Path(path).write_bytes(pcm_to_wav(pcm, SAMPLE_RATE))
    except OSError as err:
        raise TalkError(f"cannot write {path}: {err.strerror or err}") from err


def iter_frames(pcm: bytes, frame_ms: int = FRAME_MS) -> Iterator[bytes]:
    """Split PCM16 24 kHz mono into frames of `frame_ms` (the last one may be shorter)."""
    size = bytes_for_ms(frame_ms)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


# ---------------------------------------------------------------- the turn


REFUSAL_HINTS = {
    401: " (a key is needed: --api-key, or VOICE_FSM_AUTH__API_KEYS)",
    403: " (this Host or Origin is not allowed)",
    503: " (the server is full or shutting down; try again shortly)",
}
TOKEN_REFUSED_HINT = " (the token is wrong, expired or already used: mint a new one)"


def shown_url(url: str) -> str:
    """`url` for a message: a client token in its query is a credential, never printed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    query = [
        (name, "***" if name == "token" else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def _has_token(url: str) -> bool:
    try:
        query = urlsplit(url).query
    except ValueError:
        return False
    return any(name == "token" for name, _ in parse_qsl(query))


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
        if status == 401 and _has_token(url) and api_key is None:
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


# ---------------------------------------------------------------- output


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def summary_lines(result: TalkResult, out: str | Path | None = None) -> list[str]:
    """Human-readable lines for a finished turn."""
    lines = []
    if result.transcript or result.ok:
        lines.append(f"you: {result.transcript}")
    if result.reply or result.ok:
        lines.append(f"agent: {result.reply}")
    if result.audio:
        seconds = len(result.audio) / (BYTES_PER_SAMPLE * SAMPLE_RATE)
        target = f" -> {out}" if out is not None else ""
        lines.append(f"audio: {seconds:.2f} s ({len(result.audio)} bytes){target}")
    metrics = result.metrics
    if metrics is not None:
        lines.append(
            f"voice-to-voice: {_ms(metrics.voice_to_voice_ms)} ms "
            f"(stt {_ms(metrics.stt_ms)}, llm first token {_ms(metrics.llm_first_token_ms)}, "
            f"tts first audio {_ms(metrics.tts_first_audio_ms)})"
        )
    return lines
