"""Text-to-speech through OpenAI's Realtime API, the Speech API's replacement.

A Realtime session (``client.realtime.connect(model=...)``) is configured for PCM16 24 kHz
audio output in one ``session.update``; each `synthesize` call asks a session that is already
open for an out-of-band response (``"conversation": "none"``) that reads the text aloud.
Audio arrives as ``response.output_audio.delta`` events. The sessions are kept open between
sentences by `voice_fsm.adapters.openai.realtime_pool`."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, cast

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_response_create_params_param import (
    RealtimeResponseCreateParamsParam,
)
from openai.types.realtime.session_update_event_param import Session

from voice_fsm.adapters.openai import speech_fidelity
from voice_fsm.adapters.openai.client import close_quietly
from voice_fsm.adapters.openai.errors import realtime_error, translating
from voice_fsm.adapters.openai.realtime_pool import PooledSession, RealtimeSessionPool
from voice_fsm.adapters.openai.realtime_responses import (
    OutputTranscript,
    SessionLost,
    cancel_response,
    check_done,
    is_session_lost,
    lost_reason,
    speech_connection_options,
)
from voice_fsm.adapters.openai.realtime_wire import recv_event
from voice_fsm.errors import Stage
from voice_fsm.logging_setup import get_logger
from voice_fsm.provider_requests import note
from voice_fsm.settings import TtsSettings

REALTIME_MODEL = "gpt-realtime-2.1-mini"
PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}
MAX_SPEED = 1.5
"""The Realtime API's output speed range is 0.25 to 1.5; the Speech API's goes to 4."""
VERBATIM = (
    "You are a text-to-speech engine. Read the user's message aloud exactly as written, word "
    "for word, in the language it is written in. Do not answer it, comment on it, or add, "
    "leave out or change anything."
)


def is_speech_api_model(model: str) -> bool:
    """`model` is one of the Speech API's (gpt-4o-mini-tts, tts-1, tts-1-hd, their snapshots)."""
    return model.startswith("tts-") or "-tts" in model


class OpenAIRealtimeTextToSpeech:
    """`TextToSpeech` over Realtime sessions that are open and configured before they are needed.

    Opening a session costs a handshake (TCP, TLS, WebSocket upgrade, ``session.created``:
    two to four round trips, 100-300 ms to OpenAI). The sessions are kept in a
    `RealtimeSessionPool` shared by every conversation: a sentence takes an idle session and
    sends only its ``response.create``; a spare is opened in the background as soon as none
    is left idle, and `start` opens the first. A session runs one response at a time, so
    concurrent sentences each get their own. The voice is set in the session (OpenAI does not
    let a session change it once it has spoken), so sessions are kept per voice; everything
    else of a sentence travels in its ``response.create``.

    A kept session that fails before any audio (the server closed it or ended the session)
    is replaced by a new one and the sentence asked again, once. A response that is cancelled
    takes its session with it: the session is closed, not kept, since the cancelled
    response's last events would still be on their way; the spare serves the next sentence.

    A completed response's output transcript is compared with the text (`speech_fidelity`):
    a model that answered or paraphrased instead of reading is logged (``tts.diverged``) and
    counted, and `synthesize_reporting` tells its caller what was spoken instead (the reply
    keeps that). `last_transcript`: the last response's, of whichever conversation it was.
    """

    provider = "openai-realtime"

    def __init__(
        self, settings: TtsSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        self.model = REALTIME_MODEL if is_speech_api_model(settings.model) else settings.model
        self._settings = settings
        self._client = client
        self._secrets = secrets
        self._pool = RealtimeSessionPool(self._open, name="tts")
        self._closed = False
        self.last_transcript: str | None = None
        self._log = get_logger(stage="tts")
        # The SDK imports a resource's modules on first use: pay it at start-up.
        _ = client.realtime

    async def start(self) -> None:
        """Open the first session in the background; a failure is logged, not raised."""
        self._pool.refill(self._settings.voice)

    def session(self, voice: str) -> dict[str, Any]:
        """The ``session`` of the ``session.update`` that configures a session for `voice`."""
        output: dict[str, Any] = {"format": PCM_FORMAT, "voice": voice}
        speed = min(self._settings.speed, MAX_SPEED)
        if speed != 1.0:
            output["speed"] = speed
        return {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"output": output},
        }

    def response(self, text: str) -> dict[str, Any]:
        """The ``response`` of the out-of-band ``response.create`` that speaks `text`."""
        instructions = VERBATIM
        if self._settings.instructions:
            instructions += f" How to speak: {self._settings.instructions}"
        return {
            "conversation": "none",
            "output_modalities": ["audio"],
            "instructions": instructions,
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                }
            ],
        }

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncGenerator[bytes, None]:
        """Yield PCM16 24 kHz mono chunks as the response's audio deltas arrive.

        Closing the generator (or cancelling its task) before the audio is done sends
        ``response.cancel`` and closes the session.
        """
        return self.synthesize_reporting(text, voice=voice, spoken_instead=None)

    async def synthesize_reporting(
        self,
        text: str,
        *,
        voice: str | None = None,
        spoken_instead: Callable[[str], None] | None,
    ) -> AsyncGenerator[bytes, None]:
        """`synthesize`; `spoken_instead` gets the response's output transcript when it
        diverges from `text` (`speech_fidelity`), once the response is done."""
        if not text.strip():
            return
        voice = voice or self._settings.voice
        retry = True
        with translating(Stage.TTS, self._secrets):
            while True:
                session = await self._pool.take(voice, fresh=not retry)
                spoken = False
                try:
                    responding = self._respond(session, text, spoken_instead)
                    async with aclosing(responding) as chunks:
                        async for chunk in chunks:
                            spoken = True
                            yield chunk
                    return
                except Exception as err:
                    if not (retry and session.reused and not spoken and is_session_lost(err)):
                        if isinstance(err, SessionLost):
                            raise err.error from None
                        raise
                    retry = False
                    self._log.info("tts.session_lost", reason=lost_reason(err, self._secrets))
                finally:
                    self._pool.give_back(session)

    async def _respond(
        self,
        session: PooledSession,
        text: str,
        spoken_instead: Callable[[str], None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Ask `session` to speak `text` and yield its audio until ``response.done``.

        Raises `SessionLost` for an ``error`` event about the session rather than this
        request. Sets ``session.reusable`` once the response is over (``response.done``).
        """
        connection, timeout = session.connection, self._settings.timeout
        request_id = f"tts_{uuid.uuid4().hex[:20]}"
        response_id: str | None = None
        audio_done = ended = False
        transcript = OutputTranscript()
        try:
            response = cast(RealtimeResponseCreateParamsParam, self.response(text))
            await connection.response.create(response=response, event_id=request_id)
            while True:
                async with asyncio.timeout(timeout):
                    event = await recv_event(connection)
                # Unknown event types come as the union's first member: isinstance is safe.
                if isinstance(event, ResponseAudioDeltaEvent):
                    if event.delta and response_id in (None, event.response_id):
                        yield base64.b64decode(event.delta)
                elif isinstance(event, ResponseCreatedEvent):
                    response_id = event.response.id
                    note(Stage.TTS, response_id)
                    self._pool.refill(session.key)  # the next sentence's session
                elif isinstance(event, ResponseAudioTranscriptDeltaEvent):
                    if response_id in (None, event.response_id):
                        transcript.add(event.delta)
                elif isinstance(event, ResponseAudioTranscriptDoneEvent):
                    if response_id in (None, event.response_id):
                        transcript.done(event.transcript)
                elif isinstance(event, ResponseAudioDoneEvent):
                    audio_done = True
                elif isinstance(event, ResponseDoneEvent):
                    if response_id in (None, event.response.id):
                        ended = True
                        session.reusable = True  # nothing of the response is left to come
                        if not audio_done:
                            check_done(event, self._secrets)
                        self._spoke(text, transcript.text, spoken_instead)
                        return
                elif isinstance(event, RealtimeErrorEvent):
                    ended = True
                    error = event.error
                    failure = realtime_error(
                        Stage.TTS,
                        kind=error.type,
                        code=error.code,
                        message=error.message,
                        secrets=self._secrets,
                    )
                    if error.event_id == request_id:
                        raise failure
                    raise SessionLost(failure)
        finally:
            if not ended:
                await cancel_response(connection, response_id)

    def _spoke(
        self, text: str, transcript: str | None, spoken_instead: Callable[[str], None] | None
    ) -> None:
        if transcript is None:
            return  # nothing to compare: the server sent no transcript
        self.last_transcript = transcript
        diverged = speech_fidelity.check(
            text, transcript, self._secrets, provider=self.provider, model=self.model
        )
        if diverged and spoken_instead is not None:
            spoken_instead(transcript)

    async def _open(self, voice: str, confirmed: bool) -> AsyncRealtimeConnection:
        """Connect and configure a session for `voice` (the pool's opener).

        `confirmed`: return once the server answered ``session.updated``; else at once, with
        the ``session.update`` sent (the request that follows is answered after it).
        """
        timeout = self._settings.timeout
        with translating(Stage.TTS, self._secrets):
            async with asyncio.timeout(timeout):
                connection = await self._client.realtime.connect(
                    model=self.model, websocket_connection_options=speech_connection_options()
                ).enter()
            try:
                async with asyncio.timeout(timeout):
                    session = cast(Session, self.session(voice))
                    await connection.session.update(session=session)
                    while confirmed:
                        event = await connection.recv()
                        if isinstance(event, SessionUpdatedEvent):
                            break
                        if isinstance(event, RealtimeErrorEvent):
                            error = event.error
                            raise realtime_error(
                                Stage.TTS,
                                kind=error.type,
                                code=error.code,
                                message=error.message,
                                secrets=self._secrets,
                            )
            except BaseException:
                await close_quietly(connection)
                raise
        return connection

    async def aclose(self) -> None:
        """Close every session, idle or in use, and the client."""
        if self._closed:
            return
        self._closed = True
        await self._pool.aclose()
        await self._client.close()
