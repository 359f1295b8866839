"""A one-turn client for the server's WebSocket: send a recording, collect the spoken reply.

`talk()` is what `voice-fsm talk` runs; tests and benchmarks call it directly. Problems with
the connection or the protocol raise `TalkError`; an ``error`` event from the server is a
normal outcome and comes back in `TalkResult.error`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voice_fsm.audio import (
    BYTES_PER_SAMPLE,
    SAMPLE_RATE,
    bytes_for_ms,
    float_to_pcm16,
    pcm_to_wav,
    resample,
)
from voice_fsm.cli import WAV_FORMATS
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

FRAME_MS = 40
WS_PATH = "/ws"
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


# ---------------------------------------------------------------- where the server is


class ServerAddress(BaseSettings):
    """The server's host and port as `voice-fsm serve` reads them (VOICE_FSM_HOST and
    VOICE_FSM_PORT, from the environment or `.env`), and nothing else of its settings."""

    model_config = SettingsConfigDict(
        env_prefix="VOICE_FSM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


def client_host(host: str) -> str:
    """How a client on this machine names a server bound to `host`, in a URL: a wildcard
    address (0.0.0.0, ::) becomes the loopback address of its family, an IPv6 address gets
    brackets, a name stays as it is."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def default_url(settings: ServerAddress | None = None) -> str:
    """The WebSocket of the server this machine's settings describe."""
    settings = settings or ServerAddress()
    return f"ws://{client_host(settings.host)}:{settings.port}{WS_PATH}"


def websocket_url(url: str) -> tuple[str, str | None]:
    """`url` made a WebSocket URL of the server, and a note saying what was changed, if
    anything: the page's address (http://host:port, or no scheme at all) becomes ws://host:port/ws,
    https becomes wss. A path other than / is left alone (a proxy may serve /ws elsewhere)."""
    original = url
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme)
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    fixed = urlunsplit(parts._replace(scheme=scheme, path=path))
    if fixed == original:
        return url, None
    return fixed, f"using {shown_url(fixed)} (the server's WebSocket is at {WS_PATH})"


# ---------------------------------------------------------------- audio


def load_wav(path: str | Path) -> bytes:
    """Read a WAV file (see `WAV_FORMATS`) as PCM16 24 kHz mono."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TalkError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        samples, rate = decode_wav(data)
    except ValueError as err:
        raise TalkError(f"cannot read {path} as a WAV file: {err}") from err
    return float_to_pcm16(resample(samples, rate, SAMPLE_RATE))


_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_FORMAT_NAMES = {
    0x0002: "ADPCM",
    _ALAW: "A-law",
    _MULAW: "µ-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
    0x0050: "MPEG",
}
"""Names of a few compressed formats a WAV file's fmt chunk may declare."""
_OTHER_FILES = (
    (b"ID3", "an MP3 file"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"OggS", "an Ogg file (Vorbis or Opus)"),
    (b"fLaC", "a FLAC file"),
    (b"\x1aE\xdf\xa3", "a WebM or Matroska file"),
    (b"FORM", "an AIFF file"),
    (b"....ftyp", "an MP4 or M4A file"),  # . is any byte
)
CONVERT = "ffmpeg -i IN -ac 1 -ar 24000 OUT.wav"


def _not_a_wav(data: bytes) -> str:
    """Why `data` is not a WAV file, and what to do."""
    for magic, name in _OTHER_FILES:
        if len(data) >= len(magic) and all(m in (46, d) for m, d in zip(magic, data, strict=False)):
            return f"it is {name}, not WAV: convert it first, e.g. {CONVERT}"
    if not data:
        return "the file is empty"
    if data.startswith(b"RIFF"):
        return "a RIFF file cut short, or one that holds something else than WAVE audio"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in data[:512]):
        return "it is text, not audio"
    return "it is not a WAV file (it does not start with RIFF....WAVE)"


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The samples of a WAV file (float32 mono in [-1, 1]) and their rate. Raises `ValueError`
    saying why when the file is not a WAV file, or one in a format not read here."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(_not_a_wav(data))
    fmt: tuple[int, int, int, int, int] | None = None
    frames: bytes | None = None
    offset = 12
    while offset + 8 <= len(data) and frames is None:
        chunk, size = struct.unpack_from("<4sI", data, offset)
        body = data[offset + 8 : offset + 8 + size]  # a streamed file's last size may be too big
        if chunk == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID's first field
            fmt = (tag, channels, rate, block, bits)
        elif chunk == b"data":
            frames = body
        offset += 8 + size + (size & 1)
    if fmt is None:
        raise ValueError("a WAV file without a fmt chunk")
    if frames is None:
        raise ValueError("a WAV file without a data chunk")
    tag, channels, rate, block, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"a WAV file with {channels} channels at {rate} Hz")
    samples = _samples(frames, tag, bits)
    width = block // channels if block else (bits + 7) // 8
    if samples is None or width * 8 != bits:
        kind = _FORMAT_NAMES.get(tag, f"format {tag:#06x}")
        if tag in (_PCM, _FLOAT):
            kind = f"{bits}-bit {'integer PCM' if tag == _PCM else 'float'}"
        raise ValueError(f"{kind} samples are not read; this reads {WAV_FORMATS}")
    samples = samples[: len(samples) - len(samples) % channels]
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples.astype(np.float32, copy=False), rate


def _samples(frames: bytes, tag: int, bits: int) -> np.ndarray | None:
    """Float samples of interleaved frames, or None for a format not read here."""
    if tag == _FLOAT and bits in (32, 64):
        raw = np.frombuffer(frames[: len(frames) - len(frames) % (bits // 8)], f"<f{bits // 8}")
        return np.clip(np.nan_to_num(raw.astype(np.float32)), -1.0, 1.0)
    if tag != _PCM or bits not in (8, 16, 24, 32):
        return None
    width = bits // 8
    raw = np.frombuffer(frames[: len(frames) - len(frames) % width], np.uint8).reshape(-1, width)
    if width == 1:  # 8-bit WAV is unsigned
        return (raw[:, 0].astype(np.float32) - 128.0) / 128.0
    # Little-endian signed integers of any width: widen to 32 bits with the sign in the top byte.
    ints = np.zeros((len(raw), 4), np.uint8)
    ints[:, 4 - width :] = raw
    return ints.view("<i4")[:, 0].astype(np.float32) / float(1 << 31)


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
    401: (
        " (a key is needed: --api-key, or the VOICE_FSM_AUTH__API_KEYS environment variable;"
        " talk does not take keys from .env)"
    ),
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
        if status == 404 and urlsplit(url).path != WS_PATH:
            hint = f" (the server's WebSocket is at {WS_PATH})"
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
