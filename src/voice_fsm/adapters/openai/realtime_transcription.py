"""One turn's live transcription over an open Realtime transcription session: audio out as
``input_audio_buffer.append``, transcript deltas and the server VAD's speech started/stopped
events back from a reader task, and the final transcript after ``input_audio_buffer.commit``.
`realtime_stt` opens the session; this is what runs on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from types import TracebackType

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

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.adapters.openai.client import append_audio, close_quietly, read_events
from voice_fsm.adapters.openai.errors import realtime_error, translating
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.provider_requests import note

COMMIT_EMPTY = "input_audio_buffer_commit_empty"


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
        try:
            await append_audio(self._connection, pcm, secrets=self._secrets, within_s=self._timeout)
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
