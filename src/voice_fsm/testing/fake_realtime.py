"""A fake OpenAI Realtime WebSocket server (``/v1/realtime``) for tests, demos and benchmarks.

It speaks the GA shapes in docs/openai-wire-formats.md. ``?intent=transcription`` opens a
transcription session: word deltas of `FakeRealtimeConfig.transcript` arrive while audio is
appended (one per ``delta_every_ms`` of audio), ``input_audio_buffer.committed`` answers a commit
(or server VAD's end of speech) and ``...transcription.completed`` follows after
``transcription_delay``. With ``turn_detection`` set, a loudness detector plays the server's VAD
(see `_Connection.detect`): ``speech_started``, ``speech_stopped``, then the item is committed
by itself. ``?model=...`` opens a realtime session whose ``response.create`` speaks
the input text as `voice_fsm.testing.fake_openai.speech_pcm`'s tone in
``response.output_audio.delta`` chunks, with its output transcript's words alongside
(`FakeRealtimeConfig.paraphrase` makes it say something else, as a model that answers instead
of reading would). Every event both ways is recorded in
`FakeRealtimeConfig.events`, and every connection in ``.connections`` (and in ``.closed``
once it has ended).

As OpenAI does, a session runs one response at a time (a second ``response.create`` while
one is active is an ``error``, ``conversation_already_has_active_response``), keeps its voice
once it has spoken (``cannot_update_voice``), and ends after `session_max_duration` with a
``session_expired`` error. Stricter than OpenAI in one way: audio appended before the first
``session.update`` is an ``error``, so a client that forgets to configure its session is
caught.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voice_fsm.testing.fake_openai import SAMPLE_RATE, speech_pcm, transcription_usage, words
from voice_fsm.testing.threaded_server import serving_in_thread

REALTIME_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
SERVER_VAD = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
TURN_DETECTION_FIELDS = {
    "server_vad": {
        "type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
        "interrupt_response", "idle_timeout_ms",
    },
    "semantic_vad": {"type", "eagerness", "create_response", "interrupt_response"},
}  # fmt: skip
SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}
"""The fake's semantic VAD cannot tell a finished sentence: it waits this much silence."""
SEMANTIC_PREFIX_MS = 300
PCM = {"type": "audio/pcm", "rate": SAMPLE_RATE}
FRAME_SAMPLES = SAMPLE_RATE // 100  # the VAD's 10 ms frames
MIN_COMMIT_MS = 100


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    connection: int
    direction: Literal["client", "server"]
    event: dict[str, Any]
    at: float  # time.monotonic()

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


@dataclass(frozen=True, slots=True)
class RecordedConnection:
    index: int
    query: dict[str, str]
    headers: dict[str, str]
    refused: int | None  # the handshake's HTTP status, or None when accepted


@dataclass
class FakeRealtimeConfig:
    """What the fake answers and how slowly. Delays are in seconds."""

    transcript: str = "What is the capital of France?"
    transcripts: tuple[str, ...] = ()
    """Transcripts of a connection's first items, in order; later items get `transcript`."""
    api_key: str | None = None  # None accepts any key; a key is always required
    handshake_status: int | None = None  # refuse every handshake with this HTTP status
    session_delay: float = 0.0  # accept -> session.created
    delta_every_ms: int = 200  # one transcript word per this much appended audio
    transcription_delay: float = 0.3  # commit -> the remaining deltas and .completed
    transcription_failure: str | None = None  # send .failed with this message, not .completed
    vad_rms: float = 0.02
    """Server VAD: a 10 ms frame above this RMS (full scale 1) is speech at ``threshold`` 0.5;
    the bar moves with the threshold (0.9 asks for 1.8 times this)."""
    drop_after_ms: int | None = None
    """Close each connection (code 1011) once this much audio was appended to it."""
    tts_first_audio_delay: float = 0.05
    tts_chunk_delay: float = 0.01
    tts_chunk_bytes: int = 4800  # 100 ms of PCM16 at 24 kHz
    paraphrase: Callable[[str], str] | None = None
    """What a speech response says instead of its text (audio and output transcript): a model
    that answers or paraphrases rather than reading verbatim. None reads verbatim."""
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Client event type -> the ``error`` object answered instead of handling the event."""
    hang_up_on: dict[str, int] = field(default_factory=dict)
    """Client event type -> how many of the next ones the server answers by closing the
    connection (code 1011) instead: a server that fails, or a session that just ended."""
    session_max_duration: float | None = None
    """End every session this long after its connection was accepted: a ``session_expired``
    error, then the server closes the connection (OpenAI's limit is 60 minutes)."""
    events: list[RecordedEvent] = field(default_factory=list)
    connections: list[RecordedConnection] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    """Indexes of the accepted connections whose WebSocket has closed, by either side."""

    def reset(self, **changes: Any) -> None:
        """Back to the defaults plus `changes`, with empty records: one server, many tests."""
        fresh = FakeRealtimeConfig(**changes)
        for item in fields(self):
            setattr(self, item.name, getattr(fresh, item.name))

    def received(
        self, type_: str | None = None, connection: int | None = None
    ) -> list[dict[str, Any]]:
        return self._select("client", type_, connection)

    def sent(self, type_: str | None = None, connection: int | None = None) -> list[dict[str, Any]]:
        return self._select("server", type_, connection)

    def open_connections(self) -> list[int]:
        """Indexes of the accepted connections that have not ended."""
        ended = set(self.closed)
        return [c.index for c in self.connections if c.refused is None and c.index not in ended]

    def appended_audio(self, connection: int | None = None) -> bytes:
        """Every ``input_audio_buffer.append``'s audio, decoded and joined."""
        appends = self.received("input_audio_buffer.append", connection)
        return b"".join(base64.b64decode(event.get("audio", "")) for event in appends)

    def _select(
        self, direction: str, type_: str | None, connection: int | None
    ) -> list[dict[str, Any]]:
        return [
            e.event
            for e in list(self.events)
            if e.direction == direction
            and (type_ is None or e.type == type_)
            and (connection is None or e.connection == connection)
        ]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _error(code: str | None, message: str, param: str | None = None) -> dict[str, Any]:
    return {"type": "invalid_request_error", "code": code, "message": message, "param": param}


class _Connection:
    """One accepted WebSocket: the session's state and the handling of each client event."""

    def __init__(
        self, websocket: WebSocket, config: FakeRealtimeConfig, index: int, session: dict[str, Any]
    ) -> None:
        self.ws, self.config, self.index, self.session = websocket, config, index, session
        self.events = config.events  # still this connection's record after a reset
        self.lock = asyncio.Lock()
        self.gone = False
        self.dropped = False  # the server closed the connection (`drop`)
        self.tasks: set[asyncio.Task[None]] = set()
        self.configured = False
        self.samples = 0  # all audio appended in the session
        self.buffer_samples = 0  # audio since the last commit or clear
        self.item: str | None = None  # the uncommitted item
        self.item_transcript = ""  # what it says, if it holds speech
        self.item_samples = 0
        self.item_words = 0  # deltas sent for the uncommitted item
        self.items_made = 0
        self.speaking = False
        self.silence_ms = 0
        self.previous_item: str | None = None
        self.response: tuple[str, asyncio.Task[None]] | None = None
        self.spoke = False  # the session has sent audio: its voice is fixed

    async def send(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "event_id": _id("event"), **fields}
        self.events.append(RecordedEvent(self.index, "server", event, time.monotonic()))
        async with self.lock:
            if self.gone:
                return
            try:
                await self.ws.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.gone = True  # the client has closed; what it sent before is still read

    async def error(self, error: dict[str, Any], client_event: dict[str, Any]) -> None:
        await self.send("error", error={**error, "event_id": client_event.get("event_id")})

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def hang_up(self, code: int = 1011) -> None:
        """Close the connection from the server's side: a failing server (1011), or a session
        that has ended (1000). What the client sends afterwards is read and ignored."""
        async with self.lock:
            self.dropped = True
            if self.gone:
                return
            self.gone = True
            with suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code)

    async def expire(self, after: float) -> None:
        await asyncio.sleep(after)
        limit = self.config.session_max_duration or 0
        message = f"Your session hit the maximum duration of {_duration(limit)}."
        await self.send("error", error={**_error("session_expired", message), "event_id": None})
        await self.hang_up(1000)

    async def run(self) -> None:
        accepted = time.monotonic()
        await asyncio.sleep(self.config.session_delay)
        await self.send("session.created", session=self.session)
        if self.config.session_max_duration is not None:
            ends = accepted + self.config.session_max_duration
            self.spawn(self.expire(max(0.0, ends - time.monotonic())))
        try:
            # The ASGI messages themselves: Starlette's receive_text() stops after a failed send.
            while (message := await self.ws.receive())["type"] == "websocket.receive":
                if self.dropped:
                    continue  # read on until the client's close, handle nothing
                try:
                    event = json.loads(message.get("text") or message.get("bytes") or "")
                except ValueError:
                    event = None
                event = event if isinstance(event, dict) else {"type": None}
                self.events.append(RecordedEvent(self.index, "client", event, time.monotonic()))
                await self.handle(event)
        finally:
            for task in list(self.tasks):
                task.cancel()

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        hang_ups = self.config.hang_up_on
        if isinstance(kind, str) and hang_ups.get(kind, 0) > 0:
            hang_ups[kind] -= 1
            await self.hang_up(1011)
        elif kind in self.config.errors:
            await self.error(self.config.errors[kind], event)
        elif kind == "session.update":
            await self.update(event)
        elif kind == "input_audio_buffer.append":
            await self.append(event)
        elif kind == "input_audio_buffer.commit":
            await self.commit(event)
        elif kind == "input_audio_buffer.clear":
            self.buffer_samples, self.item, self.item_samples, self.item_words = 0, None, 0, 0
            self.speaking = False
            await self.send("input_audio_buffer.cleared")
        elif kind == "response.create":
            await self.create_response(event)
        elif kind == "response.cancel":
            await self.cancel_response(event)
        else:
            await self.error(_error("invalid_value", f"Invalid value: '{kind}'.", "type"), event)

    # ------------------------------------------------------------ both kinds of session

    async def update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict) or update.get("type") != self.session["type"]:
            message = f"The session's type is {self.session['type']!r} and cannot be changed."
            await self.error(_error("invalid_value", message, "session.type"), event)
            return
        audio = update.get("audio") or {}
        for direction in ("input", "output"):
            audio_format = (audio.get(direction) or {}).get("format")
            if audio_format is not None and audio_format != PCM:
                message = f"The fake speaks only {PCM}, not {audio_format}."
                await self.error(_error("invalid_value", message, "session.audio"), event)
                return
        problem = _turn_detection_problem((audio.get("input") or {}).get("turn_detection"))
        if problem is not None:
            code, message, param = problem
            await self.error(_error(code, message, param), event)
            return
        voice = (audio.get("output") or {}).get("voice")
        if voice is not None and voice not in REALTIME_VOICES:
            message = f"Invalid value: '{voice}'. Supported values are: {REALTIME_VOICES}."
            await self.error(_error("invalid_value", message, "session.audio.output.voice"), event)
            return
        if not await self.voice_may_change(voice, event):
            return
        _merge(self.session, update)
        if "turn_detection" in (audio.get("input") or {}):  # replaced as a whole, not merged
            self.session["audio"]["input"]["turn_detection"] = audio["input"]["turn_detection"]
        self.configured = True
        await self.send("session.updated", session=self.session)

    async def voice_may_change(self, voice: Any, event: dict[str, Any]) -> bool:
        """False (and an ``error`` sent) when `voice` would change a voice that has spoken."""
        current = self.session.get("audio", {}).get("output", {}).get("voice")
        if voice is None or not self.spoke or voice == current:
            return True
        message = "Cannot update a conversation's voice if assistant audio is present."
        await self.error(_error("cannot_update_voice", message), event)
        return False

    # ------------------------------------------------------------ transcription sessions

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        value = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return value if isinstance(value, dict) else None

    async def append(self, event: dict[str, Any]) -> None:
        if not self.configured:
            message = "Configure the session with session.update before appending audio."
            await self.error(_error("session_not_configured", message), event)
            return
        try:
            pcm = base64.b64decode(str(event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            pcm = b"\x00"  # an odd length: rejected below
        if len(pcm) % 2:
            message = "Invalid 'audio'. Expected base64-encoded PCM16 audio bytes."
            await self.error(_error("invalid_value", message, "audio"), event)
            return
        samples = np.frombuffer(pcm, dtype="<i2")
        vad = self.turn_detection
        for start in range(0, len(samples), FRAME_SAMPLES):
            frame = samples[start : start + FRAME_SAMPLES]
            at_ms = self.samples * 1000 // SAMPLE_RATE
            self.samples += len(frame)
            self.buffer_samples += len(frame)
            if vad is not None:
                if not await self.detect(vad, _rms(frame), at_ms):
                    continue
            elif self.item is None:
                self.new_item()
            self.item_samples += len(frame)
            await self.live_deltas()
        drop_ms = self.config.drop_after_ms
        if drop_ms is not None and self.samples * 1000 // SAMPLE_RATE >= drop_ms:
            await self.hang_up(1011)

    def new_item(self) -> str:
        made, transcripts = self.items_made, self.config.transcripts
        self.item = _id("item")
        self.item_transcript = (
            transcripts[made] if made < len(transcripts) else self.config.transcript
        )
        self.items_made += 1
        return self.item

    async def detect(self, vad: dict[str, Any], rms: float, at_ms: int) -> bool:
        """The server's VAD on one 10 ms frame; whether the frame belongs to an item (speech).

        Speech is a frame louder than `vad_rms` (scaled by the threshold); it stops after
        ``silence_duration_ms`` of quieter frames (semantic_vad: a silence set by its
        eagerness), and the item is committed at once.
        """
        if vad.get("type") == "semantic_vad":
            threshold, prefix_ms = 0.5, SEMANTIC_PREFIX_MS
            silence_ms = SEMANTIC_SILENCE_MS[vad.get("eagerness", "auto")]
        else:
            threshold = float(vad.get("threshold", SERVER_VAD["threshold"]))
            prefix_ms = int(vad.get("prefix_padding_ms", SERVER_VAD["prefix_padding_ms"]))
            silence_ms = int(vad.get("silence_duration_ms", SERVER_VAD["silence_duration_ms"]))
        loud = rms > self.config.vad_rms * threshold / 0.5
        if not self.speaking:
            if not loud:
                return False
            self.speaking, self.silence_ms = True, 0
            item = self.new_item()
            start_ms = max(0, at_ms - prefix_ms)
            await self.send(
                "input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=item
            )
            return True
        self.silence_ms = 0 if loud else self.silence_ms + 10
        if self.silence_ms < silence_ms:
            return True
        end_ms = self.samples * 1000 // SAMPLE_RATE
        await self.send("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=self.item)
        self.speaking = False
        await self.commit_item(heard=True)
        return False

    async def live_deltas(self) -> None:
        pieces = words(self.item_transcript)
        due = self.item_samples * 1000 // SAMPLE_RATE // max(1, self.config.delta_every_ms)
        while self.item_words < min(due, len(pieces)):
            await self.delta(self.item or "", pieces[self.item_words])
            self.item_words += 1

    async def delta(self, item: str, text: str) -> None:
        await self.send(
            "conversation.item.input_audio_transcription.delta",
            item_id=item,
            content_index=0,
            delta=text,
        )

    async def commit(self, event: dict[str, Any]) -> None:
        buffered_ms = self.buffer_samples * 1000 / SAMPLE_RATE
        if buffered_ms < MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio."
            )
            await self.error(_error("input_audio_buffer_commit_empty", message), event)
            return
        heard = self.turn_detection is None or self.speaking
        self.speaking = False
        await self.commit_item(heard=heard)

    async def commit_item(self, *, heard: bool) -> None:
        """Commit the buffer as an item; its transcript is the configured one if it held speech."""
        item = self.item or self.new_item()
        previous, self.previous_item, self.buffer_samples = self.previous_item, item, 0
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item)
        transcript = self.item_transcript if heard else ""
        self.spawn(self.transcribe(item, transcript, self.item_words, self.item_samples))
        self.item, self.item_samples, self.item_words = None, 0, 0
        content = [{"type": "input_audio", "transcript": None}]
        added = {"id": item, "type": "message", "object": "realtime.item", "status": "completed"}
        await self.send(
            "conversation.item.added",
            previous_item_id=previous,
            item={**added, "role": "user", "content": content},
        )

    async def transcribe(self, item: str, transcript: str, sent: int, samples: int) -> None:
        """After the delay: the words not yet sent as deltas, then .completed (or .failed)."""
        await asyncio.sleep(self.config.transcription_delay)
        kind = "conversation.item.input_audio_transcription"
        if self.config.transcription_failure is not None:
            message = self.config.transcription_failure
            error = {"type": "server_error", "code": None, "param": None, "message": message}
            await self.send(f"{kind}.failed", item_id=item, content_index=0, error=error)
            return
        for piece in words(transcript)[sent:]:
            await self.delta(item, piece)
        usage = transcription_usage(samples / SAMPLE_RATE, transcript)
        await self.send(
            f"{kind}.completed", item_id=item, content_index=0, transcript=transcript, usage=usage
        )

    # ------------------------------------------------------------ realtime (speech) sessions

    async def create_response(self, event: dict[str, Any]) -> None:
        if self.session["type"] != "realtime":
            message = "response.create is not supported in transcription sessions."
            await self.error(_error("invalid_value", message, "type"), event)
            return
        if self.response is not None:
            message = f"Conversation already has an active response in progress: {self.response[0]}"
            await self.error(_error("conversation_already_has_active_response", message), event)
            return
        params = event.get("response") or {}
        texts = [
            part.get("text", "")
            for item in params.get("input") or []
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "input_text"
        ]
        if not texts:
            message = "The fake speaks the input_text parts of response.input; none were given."
            await self.error(_error("missing_required_parameter", message, "response.input"), event)
            return
        asked = (params.get("audio") or {}).get("output", {})
        if not await self.voice_may_change(asked.get("voice"), event):
            return
        output = {**self.session["audio"]["output"], **asked}
        response_id = _id("resp")
        self.response = (response_id, self.spawn(self.speak(response_id, " ".join(texts), output)))

    async def speak(self, response_id: str, text: str, output: dict[str, Any]) -> None:
        """The events of a response that speaks `text`, paced by the configured delays."""
        config, item = self.config, _id("item")
        audio_config = {"output": {"format": output["format"], "voice": output["voice"]}}
        response = _response(response_id, "in_progress", audio=audio_config)
        await self.send("response.created", response=response)
        await asyncio.sleep(config.tts_first_audio_delay)
        message = {"id": item, "object": "realtime.item", "type": "message", "role": "assistant"}
        added = {**message, "status": "in_progress", "content": []}
        await self.send(
            "response.output_item.added", response_id=response_id, output_index=0, item=added
        )
        where = {"response_id": response_id, "item_id": item, "output_index": 0, "content_index": 0}
        # A content part's type is "audio" in the content_part events (the SDK's Part accepts
        # only "text" and "audio") but "output_audio" in the item's content.
        await self.send(
            "response.content_part.added", **where, part={"type": "audio", "transcript": ""}
        )
        said = text if config.paraphrase is None else config.paraphrase(text)
        audio, size = speech_pcm(said), max(2, config.tts_chunk_bytes)
        pieces, chunks = words(said), -(-len(audio) // size)
        sent_words = 0
        for index, start in enumerate(range(0, len(audio), size)):
            if index:
                await asyncio.sleep(config.tts_chunk_delay)
            # The transcript's words keep pace with the audio, as OpenAI's do.
            due = -(-len(pieces) * (index + 1) // chunks)  # the first word with the first audio
            for piece in pieces[sent_words:due]:
                await self.send("response.output_audio_transcript.delta", **where, delta=piece)
            sent_words = max(sent_words, due)
            delta = base64.b64encode(audio[start : start + size]).decode()
            self.spoke = True
            await self.send("response.output_audio.delta", **where, delta=delta)
        await self.send("response.output_audio.done", **where)
        await self.send("response.output_audio_transcript.done", **where, transcript=said)
        await self.send(
            "response.content_part.done", **where, part={"type": "audio", "transcript": said}
        )
        content = {"type": "output_audio", "transcript": said}
        done = {**message, "status": "completed", "content": [content]}
        await self.send(
            "response.output_item.done", response_id=response_id, output_index=0, item=done
        )
        tokens, audio_tokens = len(words(text)), len(audio) // 480
        usage = {
            "total_tokens": tokens + audio_tokens,
            "input_tokens": tokens,
            "output_tokens": audio_tokens,
        }
        self.response = None
        await self.send(
            "response.done",
            response={**response, "status": "completed", "output": [done], "usage": usage},
        )

    async def cancel_response(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self.response is None or wanted not in (None, self.response[0]):
            message = "Cannot cancel response: no active response found."
            await self.error(_error("response_cancel_not_active", message), event)
            return
        response_id, task = self.response
        self.response = None
        task.cancel()
        await asyncio.wait([task])
        details = {"type": "cancelled", "reason": "client_cancelled"}
        response = _response(response_id, "cancelled", status_details=details)
        await self.send("response.done", response=response)


def _response(response_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A ``realtime.response`` object of an out-of-band audio response."""
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": None,
        "output": [],
        "conversation_id": None,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": None,
        "usage": None,
        "metadata": None,
        **fields,
    }


def _rms(frame: np.ndarray) -> float:
    """Root mean square of PCM16 samples, full scale 1."""
    return float(np.sqrt(np.mean((frame / 32768.0) ** 2)))


def _turn_detection_problem(value: Any) -> tuple[str, str, str] | None:
    """Why OpenAI would refuse this ``turn_detection`` (code, message, param), or None."""
    where = "session.audio.input.turn_detection"
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in TURN_DETECTION_FIELDS:
        message = f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'."
        return "invalid_value", message, f"{where}.type"
    for name in value:
        if name not in TURN_DETECTION_FIELDS[kind]:
            return "unknown_parameter", f"Unknown parameter: '{where}.{name}'.", f"{where}.{name}"
    threshold = value.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        message = f"Invalid '{where}.threshold': expected a number from 0 to 1."
        return "invalid_value", message, f"{where}.threshold"
    for name in ("prefix_padding_ms", "silence_duration_ms"):
        ms = value.get(name, 0)
        if not isinstance(ms, int) or ms < 0:
            message = f"Invalid '{where}.{name}': expected a whole number of milliseconds."
            return "invalid_value", message, f"{where}.{name}"
    eagerness = value.get("eagerness", "auto")
    if eagerness not in SEMANTIC_SILENCE_MS:
        message = (
            f"Invalid value: '{eagerness}'. Supported values are: {tuple(SEMANTIC_SILENCE_MS)}."
        )
        return "invalid_value", message, f"{where}.eagerness"
    return None


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60:.0f} minutes"
    return f"{seconds:g} seconds"


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep-merge `update` into `target`, as ``session.update`` does (``null`` replaces)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _new_session(query: dict[str, str], max_duration: float | None) -> dict[str, Any]:
    expires = math.ceil(time.time() + (3600 if max_duration is None else max_duration))
    if query.get("intent") == "transcription":
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": _id("sess"),
            "expires_at": expires,
            "include": None,
            "audio": {
                "input": {
                    "format": dict(PCM),
                    "noise_reduction": None,
                    "transcription": {
                        "model": "gpt-live-transcribe",
                        "language": None,
                        "prompt": "",
                    },
                    "turn_detection": dict(SERVER_VAD),
                }
            },
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": _id("sess"),
        "model": query["model"],
        "expires_at": expires,
        "output_modalities": ["audio"],
        "instructions": "Your knowledge cutoff is 2025-10.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD),
            },
            "output": {"format": dict(PCM), "voice": "alloy", "speed": 1.0},
        },
    }


def _refusal(
    config: FakeRealtimeConfig, query: dict[str, str], headers: dict[str, str]
) -> tuple[int, str, str | None] | None:
    if config.handshake_status is not None:
        status = config.handshake_status
        return status, f"The fake refuses every connection with HTTP {status}.", None
    auth = headers.get("authorization", "")
    key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    if not key:
        return 401, "You didn't provide an API key.", None
    if config.api_key is not None and key != config.api_key:
        shown = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "***"
        message = (
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return 401, message, "invalid_api_key"
    if query.get("intent") != "transcription" and not query.get("model"):
        return 400, "Missing required parameter: 'model'.", "missing_required_parameter"
    return None


def realtime_routes(
    config: FakeRealtimeConfig, connection: type[_Connection] | None = None
) -> list[BaseRoute]:
    """The ``/v1/realtime`` WebSocket route, to mount in any Starlette app: the handshake's
    checks and records, then `connection` (this fake's, or a subclass's) runs the session."""
    runs = connection or _Connection

    async def endpoint(websocket: WebSocket) -> None:
        query = dict(websocket.query_params)
        headers = {key.lower(): value for key, value in websocket.headers.items()}
        index = len(config.connections)
        refusal = _refusal(config, query, headers)
        config.connections.append(
            RecordedConnection(index, query, headers, refusal[0] if refusal else None)
        )
        if refusal is not None:
            status, message, code = refusal
            body = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
            await websocket.send_denial_response(JSONResponse(body, status_code=status))
            return
        await websocket.accept()
        closed = config.closed  # this connection's record, even after a reset
        session = _new_session(query, config.session_max_duration)
        try:
            await runs(websocket, config, index, session).run()
        finally:
            closed.append(index)

    return [WebSocketRoute("/v1/realtime", endpoint)]


def create_fake_realtime_app(config: FakeRealtimeConfig) -> Starlette:
    return Starlette(routes=realtime_routes(config))


@contextmanager
def running_fake_realtime(config: FakeRealtimeConfig, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the fake under uvicorn in a thread on a free port; yields its base URL (.../v1)."""
    with serving_in_thread(create_fake_realtime_app(config), "fake-realtime", host) as base_url:
        yield base_url
