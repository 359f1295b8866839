"""Speech-to-text through OpenAI's Realtime API: the turn is transcribed while it is recorded.

One WebSocket per turn, opened with ``client.realtime.connect(extra_query={"intent":
"transcription"})`` (GA: no model in the URL), configured with one ``session.update`` of type
``transcription``. Audio goes out as ``input_audio_buffer.append`` events; the transcript comes
back as ``conversation.item.input_audio_transcription.delta`` events during the recording and one
``.completed`` event shortly after ``input_audio_buffer.commit`` (what runs on one turn's
connection is `realtime_transcription`).

The SDK raises for none of the server's ``error`` events, and a refused handshake raises
websockets' exceptions, not the SDK's: both are translated here (see `errors`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from enum import Enum
from typing import Any, cast

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent
from openai.types.realtime.session_update_event_param import Session

from voice_fsm.adapters.base import SpeechToText, TranscriptDone, TranscriptEvent
from voice_fsm.adapters.openai.client import close_quietly, connection_options
from voice_fsm.adapters.openai.errors import (
    PASSING_CODES,
    lacks_realtime,
    no_realtime,
    realtime_error,
    translating,
)
from voice_fsm.adapters.openai.realtime_transcription import RealtimeTranscription, VadEvent
from voice_fsm.adapters.openai.realtime_turns import RealtimeTurnDetector
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import SttSettings

LIVE_MODEL = "gpt-live-transcribe"
APPEND_BYTES = 96_000
"""Audio per ``input_audio_buffer.append`` when a completed recording is sent: 2 s of PCM16."""

TurnDetection = dict[str, Any] | None
"""``None``: manual commit (push-to-talk); else e.g. ``{"type": "server_vad", ...}``."""


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


class OpenAIRealtimeSpeechToText:
    """`SpeechToText` and `LiveSpeechToText` over OpenAI's Realtime transcription sessions.

    ``transcribe`` (a completed recording) runs through a Realtime session too: the whole
    recording is appended, committed, and the transcript streamed back; no second model or
    endpoint to configure. Pass `fallback` (e.g. an `OpenAISpeechToText` on the file model) to
    send completed recordings there instead.

    `probe`: the base URL of a compatible server that may have no Realtime transcription
    (``VOICE_FSM_STT__LIVE=auto``). The first live turn's connection asks it, at no extra
    cost: it waits for ``session.updated`` while the user talks. If the server has none
    (`errors.lacks_realtime`, or an error event), that turn's `start_live` raises the one error
    that says so; from then on `live_available` is False and recordings go to `fallback`.
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
        probe: str | None = None,
    ) -> None:
        self.model: str = getattr(settings, "live_model", LIVE_MODEL)
        self.live_available = True
        """False once the server has shown it has no Realtime transcription (see `probe`)."""
        self._probe = probe  # the server still to be asked, if any
        self._asking = asyncio.Lock()  # sessions starting at once wait for one answer
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
        connection = await self._open_live(language, turn_detection)
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

    async def _open_live(
        self, language: str | None, turn_detection: TurnDetection
    ) -> AsyncRealtimeConnection:
        """A live turn's connection; the first at a server still to be asked is the question."""
        if self._probe is not None:
            async with self._asking:
                if self._probe is not None:
                    return await self._ask(self._probe, language, turn_detection)
        if not self.live_available:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR,
                "Live transcription is off: the server has no Realtime transcription.",
                stage=Stage.STT,
            )
        return await self._connect(language, turn_detection)

    async def _ask(
        self, server: str, language: str | None, turn_detection: TurnDetection
    ) -> AsyncRealtimeConnection:
        """Connect to `server` and wait for it to accept the session. Raises the error that
        ends live transcription for good when it shows it has none, else as `_connect`."""
        try:
            connection = await self._connect(language, turn_detection)
        except ProviderError as err:
            if (reason := lacks_realtime(err)) is None:
                raise
            raise self._give_up(server, reason) from err
        try:
            timeout, secrets = self._settings.timeout, self._secrets
            if (reason := await confirm(connection, within_s=timeout, secrets=secrets)) is not None:
                raise self._give_up(server, reason)
        except BaseException:
            await close_quietly(connection)
            raise
        self._probe = None  # it has Realtime transcription: no more questions
        return connection

    def _give_up(self, server: str, reason: str) -> ProviderError:
        self._probe, self.live_available = None, False
        if self._fallback is not None:
            self.model = self._fallback.model
        return no_realtime(server, reason)

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


async def confirm(
    connection: AsyncRealtimeConnection, *, within_s: float, secrets: tuple[str, ...]
) -> str | None:
    """Wait for the server to accept the transcription session (``session.updated``): None
    when it does, else why it has none. Raises `ProviderError` when it does not tell."""
    with translating(Stage.STT, secrets):
        async with asyncio.timeout(within_s):
            while (event := await connection.recv()).type != "session.updated":
                if isinstance(event, RealtimeErrorEvent):
                    error = event.error
                    refused = realtime_error(
                        Stage.STT,
                        kind=error.type,
                        code=error.code,
                        message=error.message,
                        secrets=secrets,
                    )
                    if refused.code in PASSING_CODES:
                        raise refused
                    said = refused.message.partition(" failed: ")[2] or refused.message
                    return f"it refused a transcription session: {said}"
    return None
