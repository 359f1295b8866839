"""Hands-free turns found by OpenAI's Realtime transcription session itself.

One connection per hands-free stream, configured like a live transcription (see
`realtime_stt`) but with ``turn_detection`` on (``server_vad`` or ``semantic_vad``).
Every microphone frame is appended as it arrives. The server's VAD answers with
``input_audio_buffer.speech_started`` / ``speech_stopped``, commits the speech as an item by
itself and transcribes it on the same connection: ``...transcription.delta`` events while the
user talks, ``.completed`` after the commit. `RealtimeTurnDetector` passes the VAD events on and
gives each item's transcript as a `LiveTranscription` (`ItemTranscription`), so a turn needs no
connection of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent as TranscriptionCompletedEvent,
)
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionDeltaEvent as TranscriptionDeltaEvent,
)
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionFailedEvent as TranscriptionFailedEvent,
)
from openai.types.realtime import (
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    RealtimeServerEvent,
)

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.adapters.openai.client import append_audio, close_quietly, read_events
from voice_fsm.adapters.openai.errors import realtime_error
from voice_fsm.errors import ErrorCode, ProviderError, ServerError, Stage, VoiceError
from voice_fsm.provider_requests import note
from voice_fsm.settings import VadSettings
from voice_fsm.vad_events import SpeechStarted, SpeechStopped, VadEvent

APPEND_BYTES = 96_000
"""Most audio per ``input_audio_buffer.append`` when frames have piled up: 2 s of PCM16."""
KEPT_ITEMS = 16
"""Items whose transcripts are kept for a turn to claim; older ones are forgotten."""


def turn_detection(vad: VadSettings) -> dict[str, Any]:
    """The session's ``turn_detection`` for the hands-free settings."""
    if vad.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": vad.eagerness}
    return {
        "type": "server_vad",
        "threshold": vad.threshold,
        "prefix_padding_ms": vad.pad_ms("openai-realtime"),
        "silence_duration_ms": vad.min_silence_ms,
    }


def _closed_error() -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        "The hands-free transcription was closed before it finished.",
        stage=Stage.STT,
    )


class _Item:
    """What the server said of one item (one detected speech): deltas, then its end."""

    def __init__(self) -> None:
        self.deltas: asyncio.Queue[TranscriptDelta | None] = asyncio.Queue()
        self.transcript: str | None = None
        self.error: VoiceError | None = None
        self.done = asyncio.Event()

    def delta(self, text: str) -> None:
        if text and not self.done.is_set():
            self.deltas.put_nowait(TranscriptDelta(text))

    def end(self, transcript: str | None = None, error: VoiceError | None = None) -> None:
        if self.done.is_set():
            return
        self.transcript, self.error = transcript, error
        self.done.set()
        self.deltas.put_nowait(None)


class ItemTranscription:
    """One item's transcript on the stream's connection (a `LiveTranscription`).

    `append` does nothing: the stream has sent this audio already.
    """

    def __init__(self, item_id: str, item: _Item, *, timeout: float) -> None:
        self._item_id = item_id
        self._item = item
        self._timeout = timeout

    async def append(self, pcm: bytes) -> None:
        return None

    async def deltas(self) -> AsyncGenerator[TranscriptDelta, None]:
        while (delta := await self._item.deltas.get()) is not None:
            yield delta
        self._item.deltas.put_nowait(None)  # for whoever asks next

    async def finish(self) -> str:
        """The item's transcript, once the server's VAD has committed and transcribed it."""
        note(Stage.STT, self._item_id)
        try:
            async with asyncio.timeout(self._timeout):
                await self._item.done.wait()
        except TimeoutError:
            message = f"OpenAI speech-to-text sent no transcript within {self._timeout:g} s."
            self._item.end(
                error=ProviderError(ErrorCode.PROVIDER_TIMEOUT, message, stage=Stage.STT)
            )
        if self._item.error is not None:
            raise self._item.error
        assert self._item.transcript is not None
        return self._item.transcript

    async def aclose(self) -> None:
        self._item.end(error=_closed_error())


class RealtimeTurnDetector:
    """One hands-free stream over an open transcription connection (a `TurnDetector`).

    A writer task sends the appended audio in order; a reader task turns server events into
    VAD events and item transcripts. Any failure (an ``error`` event, the connection lost)
    ends the detector: `events` ends, `error` says why, and unfinished items fail with it.
    """

    def __init__(
        self, connection: AsyncRealtimeConnection, *, timeout: float, secrets: tuple[str, ...] = ()
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._secrets = secrets
        self._pending = bytearray()
        self._wake = asyncio.Event()
        self._events: asyncio.Queue[VadEvent | None] = asyncio.Queue()
        self._items: dict[str, _Item] = {}
        self._error: VoiceError | None = None
        self._closed = False
        self._reader = asyncio.create_task(self._read(), name="openai-realtime-vad-reader")
        self._writer = asyncio.create_task(self._write(), name="openai-realtime-vad-writer")

    @property
    def error(self) -> VoiceError | None:
        return self._error

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Queue `pcm` for the server; its VAD's events come later, through `events`."""
        if pcm and not self._stopped:
            self._pending += pcm
            self._wake.set()
        return []

    async def events(self) -> AsyncGenerator[VadEvent, None]:
        while (event := await self._events.get()) is not None:
            yield event
        self._events.put_nowait(None)

    def transcription(self, item: str) -> ItemTranscription:
        return ItemTranscription(item, self._item(item), timeout=self._timeout)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end(_closed_error())
        for task in (self._reader, self._writer):
            task.cancel()
        try:
            await asyncio.wait({self._reader, self._writer})
        finally:
            await close_quietly(self._connection)

    # ------------------------------------------------------------ the reader and writer tasks

    @property
    def _stopped(self) -> bool:
        return self._closed or self._error is not None

    async def _write(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopped:
                chunk = bytes(self._pending[:APPEND_BYTES])
                del self._pending[:APPEND_BYTES]
                try:
                    await append_audio(
                        self._connection, chunk, secrets=self._secrets, within_s=self._timeout
                    )
                except ProviderError as err:
                    self._fail(err)

    async def _read(self) -> None:
        try:
            await read_events(
                self._connection,
                self._handle,
                stage=Stage.STT,
                secrets=self._secrets,
                closed="OpenAI speech-to-text closed the connection of hands-free mode.",
            )
        except ProviderError as err:
            self._fail(err)
        except Exception as err:  # a bug: end the stream with it rather than hang
            failure = ServerError(ErrorCode.INTERNAL, f"Internal error: {type(err).__name__}")
            failure.__cause__ = err
            self._fail(failure)

    def _handle(self, event: RealtimeServerEvent) -> None:
        # An unknown event type is built as the union's first member (ConversationCreatedEvent),
        # which is not handled here: the isinstance tests are safe.
        if isinstance(event, TranscriptionDeltaEvent):
            self._item(event.item_id).delta(event.delta or "")
        elif isinstance(event, TranscriptionCompletedEvent):
            self._item(event.item_id).end(transcript=event.transcript)
        elif isinstance(event, TranscriptionFailedEvent):
            failed = event.error
            self._item(event.item_id).end(
                error=self._error_from(failed.type, failed.code, failed.message)
            )
        elif isinstance(event, InputAudioBufferSpeechStartedEvent):
            self._item(event.item_id)
            self._events.put_nowait(SpeechStarted(event.audio_start_ms, item=event.item_id))
        elif isinstance(event, InputAudioBufferSpeechStoppedEvent):
            self._events.put_nowait(SpeechStopped(event.audio_end_ms, item=event.item_id))
        elif isinstance(event, RealtimeErrorEvent):
            problem = event.error
            self._fail(self._error_from(problem.type, problem.code, problem.message))

    def _item(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item()
            if self._stopped:
                item.end(error=self._error or _closed_error())
            while len(self._items) > KEPT_ITEMS:
                del self._items[next(iter(self._items))]
        return item

    def _error_from(self, kind: str | None, code: str | None, message: str | None) -> ProviderError:
        return realtime_error(
            Stage.STT, kind=kind, code=code, message=message, secrets=self._secrets
        )

    def _fail(self, err: VoiceError) -> None:
        if not self._stopped:
            self._error = err
            self._end(err)

    def _end(self, err: VoiceError) -> None:
        """End the events and every unfinished item, and wake the writer so it returns."""
        self._events.put_nowait(None)
        for item in self._items.values():
            item.end(error=err)
        self._wake.set()
