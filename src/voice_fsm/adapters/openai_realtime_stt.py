"""Speech-to-text through OpenAI's Realtime API: the turn is transcribed while it is recorded.

One WebSocket per turn, opened with ``client.realtime.connect(extra_query={"intent":
"transcription"})`` (GA: no model in the URL), configured with one ``session.update`` of type
``transcription``. Audio goes out as ``input_audio_buffer.append`` events; the transcript comes
back as ``conversation.item.input_audio_transcription.delta`` events during the recording and one
``.completed`` event shortly after ``input_audio_buffer.commit``.

The SDK raises for none of the server's ``error`` events, and a refused handshake raises
websockets' exceptions, not the SDK's: both are translated here (see `openai_errors`).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, cast

from openai import AsyncOpenAI
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
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    RealtimeServerEvent,
)
from openai.types.realtime.session_update_event_param import Session

from voice_fsm.adapters.base import SpeechToText, TranscriptDelta, TranscriptDone, TranscriptEvent
from voice_fsm.adapters.openai_client import close_quietly, connection_options, read_events
from voice_fsm.adapters.openai_errors import realtime_error, translating
from voice_fsm.adapters.openai_realtime_turns import RealtimeTurnDetector
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import SttSettings

LIVE_MODEL = "gpt-live-transcribe"
APPEND_BYTES = 96_000
"""Audio per ``input_audio_buffer.append`` when a completed recording is sent: 2 s of PCM16."""
COMMIT_EMPTY = "input_audio_buffer_commit_empty"

TurnDetection = dict[str, Any] | None
"""``None``: manual commit (push-to-talk); else e.g. ``{"type": "server_vad", ...}``."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The server's VAD heard speech begin (``input_audio_buffer.speech_started``)."""

    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The server's VAD heard speech end (``input_audio_buffer.speech_stopped``)."""

    audio_end_ms: int
    item_id: str


VadEvent = SpeechStarted | SpeechStopped


class _Default(Enum):
    TURN_DETECTION = "the adapter's turn detection"


def transcription_session(
    model: str, language: str | None, turn_detection: TurnDetection
) -> dict[str, Any]:
    """The ``session`` of the ``session.update`` that configures a transcription session."""
    transcription: dict[str, Any] = {"model": model}
    if language:
        transcription["language"] = language
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": transcription,
                "turn_detection": turn_detection,
                "noise_reduction": {"type": "near_field"},
            }
        },
    }


class RealtimeTranscription:
    """One turn's live transcription over an open Realtime connection (a `LiveTranscription`).

    A reader task turns server events into deltas, VAD events and the final transcript.
    Failures are kept, not raised, until `finish` (``append`` never raises for them, so the
    audio loop keeps going); `error` shows them early. `deltas` and `vad_events` are meant for
    one consumer each, and end when the transcript is final, the transcription fails or it is
    closed. Use it as an async context manager, or call `aclose`.
    """

    def __init__(
        self,
        connection: AsyncRealtimeConnection,
        *,
        timeout: float,
        secrets: tuple[str, ...] = (),
        on_vad: Callable[[VadEvent], None] | None = None,
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._secrets = secrets
        self._on_vad = on_vad
        self._deltas: asyncio.Queue[TranscriptDelta | None] = asyncio.Queue()
        self._vad: asyncio.Queue[VadEvent | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._items: list[str] = []  # committed items, in order
        self._transcripts: dict[str, str] = {}
        self._commit_id: str | None = None
        self._commit_done = False  # the server answered our commit
        self._final: str | None = None
        self._error: Exception | None = None
        self._closed = False
        self._streams_ended = False
        self._reader = asyncio.create_task(self._read(), name="openai-realtime-stt-reader")

    @property
    def error(self) -> Exception | None:
        """Why the transcription failed, as soon as it has (`finish` raises it)."""
        return self._error

    async def append(self, pcm: bytes) -> None:
        """Send `pcm` (PCM16 24 kHz mono); waits only for the socket's write buffer."""
        if not pcm or self._closed or self._ended or self._commit_id is not None:
            return
        audio = base64.b64encode(pcm).decode("ascii")
        try:
            with translating(Stage.STT, self._secrets):
                async with asyncio.timeout(self._timeout):
                    await self._connection.input_audio_buffer.append(audio=audio)
        except ProviderError as err:
            self._fail(err)

    async def deltas(self) -> AsyncGenerator[TranscriptDelta, None]:
        while (delta := await self._deltas.get()) is not None:
            yield delta
        self._deltas.put_nowait(None)  # for whoever asks next

    async def vad_events(self) -> AsyncGenerator[VadEvent, None]:
        """``speech_started``/``speech_stopped`` of the server's VAD (hands-free mode)."""
        while (event := await self._vad.get()) is not None:
            yield event
        self._vad.put_nowait(None)

    async def finish(self) -> str:
        """Commit the audio and wait (at most the stage timeout) for the final transcript.

        With several committed items (server VAD) their transcripts are joined by spaces.
        """
        if self._final is None and self._error is None and self._commit_id is None:
            if self._closed:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR,
                    "The live transcription was closed before it finished.",
                    stage=Stage.STT,
                )
            self._commit_id = "commit_" + uuid.uuid4().hex[:20]
            try:
                with translating(Stage.STT, self._secrets):
                    async with asyncio.timeout(self._timeout):
                        await self._connection.input_audio_buffer.commit(event_id=self._commit_id)
            except ProviderError as err:
                self._fail(err)
        try:
            async with asyncio.timeout(self._timeout):
                while self._final is None and self._error is None:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            self._fail(
                ProviderError(
                    ErrorCode.PROVIDER_TIMEOUT,
                    f"OpenAI speech-to-text sent no transcript within {self._timeout:g} s.",
                    stage=Stage.STT,
                )
            )
        if self._error is not None:
            raise self._error
        assert self._final is not None
        return self._final

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end()
        self._reader.cancel()
        try:
            await asyncio.wait([self._reader])
        finally:
            await close_quietly(self._connection)

    async def __aenter__(self) -> RealtimeTranscription:
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _err: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------ the reader task

    @property
    def _ended(self) -> bool:
        return self._final is not None or self._error is not None

    async def _read(self) -> None:
        try:
            await read_events(
                self._connection,
                self._handle,
                stage=Stage.STT,
                secrets=self._secrets,
                closed="OpenAI speech-to-text closed the connection before the transcript "
                "was done.",
            )
        except Exception as err:  # kept for finish(), which raises it
            self._fail(err)

    def _handle(self, event: RealtimeServerEvent) -> None:
        # The SDK builds an unknown event type as the union's first member
        # (ConversationCreatedEvent), which is not handled here: the isinstance tests are safe.
        if isinstance(event, TranscriptionDeltaEvent):
            if event.delta and not self._ended:
                self._deltas.put_nowait(TranscriptDelta(event.delta))
            return
        if isinstance(event, TranscriptionCompletedEvent):
            self._transcripts[event.item_id] = event.transcript
        elif isinstance(event, InputAudioBufferCommittedEvent):
            self._items.append(event.item_id)
            note(Stage.STT, event.item_id)
            if self._commit_id is not None:
                self._commit_done = True
        elif isinstance(event, TranscriptionFailedEvent):
            failed = event.error
            self._fail(self._error_from(failed.type, failed.code, failed.message))
        elif isinstance(event, RealtimeErrorEvent):
            error = event.error
            if error.code == COMMIT_EMPTY and error.event_id == self._commit_id:
                self._commit_done = True  # nothing left to commit: the items so far are all
            else:
                self._fail(self._error_from(error.type, error.code, error.message))
        elif isinstance(event, InputAudioBufferSpeechStartedEvent):
            self._vad_event(SpeechStarted(event.audio_start_ms, event.item_id))
        elif isinstance(event, InputAudioBufferSpeechStoppedEvent):
            self._vad_event(SpeechStopped(event.audio_end_ms, event.item_id))
        if (
            self._commit_done
            and not self._ended
            and all(item in self._transcripts for item in self._items)
        ):
            texts = (self._transcripts[item].strip() for item in self._items)
            self._final = " ".join(text for text in texts if text)
            self._end()

    def _error_from(self, kind: str | None, code: str | None, message: str | None) -> ProviderError:
        return realtime_error(
            Stage.STT, kind=kind, code=code, message=message, secrets=self._secrets
        )

    def _vad_event(self, event: VadEvent) -> None:
        if self._ended:
            return
        self._vad.put_nowait(event)
        if self._on_vad is not None:
            self._on_vad(event)

    def _fail(self, err: Exception) -> None:
        if not self._ended:
            self._error = err
            self._end()

    def _end(self) -> None:
        """Wake `finish` and end both streams."""
        self._changed.set()
        if not self._streams_ended:
            self._streams_ended = True
            self._deltas.put_nowait(None)
            self._vad.put_nowait(None)


class OpenAIRealtimeSpeechToText:
    """`SpeechToText` and `LiveSpeechToText` over OpenAI's Realtime transcription sessions.

    ``transcribe`` (a completed recording) runs through a Realtime session too: the whole
    recording is appended, committed, and the transcript streamed back; no second model or
    endpoint to configure. Pass `fallback` (e.g. an `OpenAISpeechToText` on the file model) to
    send completed recordings there instead.
    """

    provider = "openai"

    def __init__(
        self,
        settings: SttSettings,
        client: AsyncOpenAI,
        secrets: tuple[str, ...] = (),
        *,
        turn_detection: TurnDetection = None,
        fallback: SpeechToText | None = None,
    ) -> None:
        self.model: str = getattr(settings, "live_model", LIVE_MODEL)
        self._settings = settings
        self._client = client
        self._secrets = secrets
        self._turn_detection = turn_detection
        self._fallback = fallback
        self._open: weakref.WeakSet[RealtimeTranscription | RealtimeTurnDetector] = (
            weakref.WeakSet()
        )
        # The SDK imports a resource's modules on first use: pay it at start-up.
        _ = client.realtime

    async def start_live(
        self,
        *,
        language: str | None = None,
        turn_detection: TurnDetection | _Default = _Default.TURN_DETECTION,
        on_vad: Callable[[VadEvent], None] | None = None,
    ) -> RealtimeTranscription:
        """Connect and configure a transcription session for one turn.

        `turn_detection` overrides the adapter's (``None``: manual commit). `on_vad` is called
        with every speech started/stopped event, in the reader task; it must not block.
        """
        if isinstance(turn_detection, _Default):
            turn_detection = self._turn_detection
        connection = await self._connect(language, turn_detection)
        live = RealtimeTranscription(
            connection, timeout=self._settings.timeout, secrets=self._secrets, on_vad=on_vad
        )
        self._open.add(live)
        return live

    async def detect_turns(
        self, *, language: str | None = None, turn_detection: dict[str, Any]
    ) -> RealtimeTurnDetector:
        """Open one hands-free stream's connection, with the server's VAD (`turn_detection`)
        finding its turns and transcribing each (a `TurnDetector`)."""
        connection = await self._connect(language, turn_detection)
        turns = RealtimeTurnDetector(
            connection, timeout=self._settings.timeout, secrets=self._secrets
        )
        self._open.add(turns)
        return turns

    async def _connect(
        self, language: str | None, turn_detection: TurnDetection
    ) -> AsyncRealtimeConnection:
        """A transcription session, connected and configured."""
        session = transcription_session(
            self.model, language or self._settings.language, turn_detection
        )
        with translating(Stage.STT, self._secrets):
            async with asyncio.timeout(self._settings.timeout):
                connection = await self._client.realtime.connect(
                    extra_query={"intent": "transcription"},
                    websocket_connection_options=connection_options(),
                ).enter()
            try:
                async with asyncio.timeout(self._settings.timeout):
                    await connection.session.update(session=cast(Session, session))
            except BaseException:
                await close_quietly(connection)
                raise
        return connection

    def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncIterator[TranscriptEvent]:
        if self._fallback is not None:
            return self._fallback.transcribe(pcm, language=language)
        return self._transcribe_live(pcm, language)

    async def _transcribe_live(
        self, pcm: bytes, language: str | None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        async with await self.start_live(language=language, turn_detection=None) as live:
            for start in range(0, len(pcm), APPEND_BYTES):
                await live.append(pcm[start : start + APPEND_BYTES])
            finishing = asyncio.create_task(live.finish())
            try:
                async for delta in live.deltas():
                    yield delta
                yield TranscriptDone(await finishing)
            finally:
                finishing.cancel()
                await asyncio.wait([finishing])
                if not finishing.cancelled():
                    finishing.exception()  # retrieved: raised above, or no longer wanted

    async def aclose(self) -> None:
        for live in list(self._open):
            await live.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()
        await self._client.close()
