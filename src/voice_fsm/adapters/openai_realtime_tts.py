"""Text-to-speech through OpenAI's Realtime API, the Speech API's replacement.

Each `synthesize` call opens a Realtime session (``client.realtime.connect(model=...)``),
configures it for PCM16 24 kHz audio output in one ``session.update`` and asks for an
out-of-band response (``"conversation": "none"``) that reads the text aloud. Audio arrives as
``response.output_audio.delta`` events.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any, cast

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)
from openai.types.realtime.realtime_response_create_params_param import (
    RealtimeResponseCreateParamsParam,
)
from openai.types.realtime.session_update_event_param import Session

from voice_fsm.adapters.openai_client import close_quietly, connection_options
from voice_fsm.adapters.openai_errors import TRANSLATED, realtime_error, translating
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import TtsSettings

REALTIME_MODEL = "gpt-realtime-2.1-mini"
PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}
MAX_SPEED = 1.5
"""The Realtime API's output speed range is 0.25 to 1.5; the Speech API's goes to 4."""
CANCEL_TIMEOUT = 1.0
VERBATIM = (
    "You are a text-to-speech engine. Read the user's message aloud exactly as written, word "
    "for word, in the language it is written in. Do not answer it, comment on it, or add, "
    "leave out or change anything."
)


def is_speech_api_model(model: str) -> bool:
    """`model` is one of the Speech API's (gpt-4o-mini-tts, tts-1, tts-1-hd, their snapshots)."""
    return model.startswith("tts-") or "-tts" in model


class OpenAIRealtimeTextToSpeech:
    """`TextToSpeech` over a Realtime session, one WebSocket per `synthesize` call.

    A connection per call costs a handshake (TCP, TLS, WebSocket upgrade and the
    ``session.created`` event: roughly two to four round trips, 100-300 ms to OpenAI) before
    the first audio of every sentence. Keeping one warm session per conversation would save
    that, at the price of reconnect and session-expiry handling; not done yet.
    """

    provider = "openai-realtime"

    def __init__(
        self, settings: TtsSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        self.model = REALTIME_MODEL if is_speech_api_model(settings.model) else settings.model
        self._settings = settings
        self._client = client
        self._secrets = secrets
        # The SDK imports a resource's modules on first use: pay it at start-up.
        _ = client.realtime

    def session(self, voice: str) -> dict[str, Any]:
        """The ``session`` of the ``session.update`` sent before each response."""
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

    async def synthesize(
        self, text: str, *, voice: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield PCM16 24 kHz mono chunks as the response's audio deltas arrive.

        Closing the generator (or cancelling its task) before the audio is done sends
        ``response.cancel`` and closes the connection.
        """
        if not text.strip():
            return
        timeout = self._settings.timeout
        with translating(Stage.TTS, self._secrets):
            async with asyncio.timeout(timeout):
                connection = await self._client.realtime.connect(
                    model=self.model, websocket_connection_options=connection_options()
                ).enter()
            response_id: str | None = None
            done = False
            try:
                session = self.session(voice or self._settings.voice)
                await connection.session.update(session=cast(Session, session))
                response = cast(RealtimeResponseCreateParamsParam, self.response(text))
                await connection.response.create(response=response)
                while True:
                    async with asyncio.timeout(timeout):
                        event = await connection.recv()
                    # Unknown event types come as the union's first member: isinstance is safe.
                    if isinstance(event, ResponseAudioDeltaEvent):
                        if event.delta:
                            yield base64.b64decode(event.delta)
                    elif isinstance(event, ResponseCreatedEvent):
                        response_id = event.response.id
                        note(Stage.TTS, response_id)
                    elif isinstance(event, ResponseAudioDoneEvent):
                        done = True
                        return
                    elif isinstance(event, ResponseDoneEvent):
                        done = True
                        self._check_done(event)
                        return
                    elif isinstance(event, RealtimeErrorEvent):
                        done = True
                        error = event.error
                        raise realtime_error(
                            Stage.TTS,
                            kind=error.type,
                            code=error.code,
                            message=error.message,
                            secrets=self._secrets,
                        )
            finally:
                if not done:
                    await _cancel(connection, response_id)
                await close_quietly(connection)

    def _check_done(self, event: ResponseDoneEvent) -> None:
        """``response.done`` before ``response.output_audio.done``: say why there is no audio."""
        response = event.response
        if response.status == "completed":
            return
        details = response.status_details
        error = details.error if details is not None else None
        if error is not None:
            raise realtime_error(
                Stage.TTS, kind=error.type, code=error.code, message=None, secrets=self._secrets
            )
        reason = details.reason if details is not None else None
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR,
            f"OpenAI text-to-speech ended the response as {response.status}"
            + (f" ({reason})." if reason else "."),
            stage=Stage.TTS,
        )

    async def aclose(self) -> None:
        await self._client.close()


async def _cancel(connection: AsyncRealtimeConnection, response_id: str | None) -> None:
    """Ask the server to stop generating; an out-of-band response is cancelled by its id."""
    with suppress(*TRANSLATED):
        async with asyncio.timeout(CANCEL_TIMEOUT):
            if response_id is not None:
                await connection.response.cancel(response_id=response_id)
            else:
                await connection.response.cancel()
