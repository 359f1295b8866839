"""Text-to-speech through OpenAI's Speech API, ``POST /audio/speech`` (or a compatible server).

OpenAI shuts the Speech API's models down on 2027-01-06 (see `voice_fsm.model_lifecycle`);
servers that speak the same shape (speaches, Kokoro-FastAPI, ...) keep this adapter useful.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from openai import AsyncOpenAI, omit

from voice_fsm.adapters.openai.errors import translating
from voice_fsm.adapters.openai.http import OpenAIHttpAdapter
from voice_fsm.errors import Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import TtsSettings


class OpenAITextToSpeech(OpenAIHttpAdapter[TtsSettings]):
    def __init__(
        self, settings: TtsSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(settings, client, secrets, stage=Stage.TTS)
        self.model = settings.model_for("openai")  # unset: the Speech API's own model
        # The SDK imports a resource's modules on first use (about 0.2 s): pay it at start-up,
        # not in the first user's turn.
        _ = client.audio.speech

    async def synthesize(
        self, text: str, *, voice: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield raw PCM16 24 kHz mono chunks as the server sends them, never the whole file."""
        settings = self._settings
        self._request_starts()
        with translating(Stage.TTS, self._secrets):
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=voice or settings.voice,
                input=text,
                response_format="pcm",
                speed=settings.speed,
                instructions=settings.instructions or omit,
            ) as response:
                note(Stage.TTS, response.headers.get("x-request-id"))
                async for chunk in response.iter_bytes():
                    if chunk:
                        yield chunk
