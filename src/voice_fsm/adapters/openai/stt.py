"""Speech-to-text through OpenAI's ``POST /audio/transcriptions`` (or a compatible server)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from openai import AsyncOpenAI, AsyncStream, omit
from openai.types.audio import TranscriptionStreamEvent

from voice_fsm.adapters.base import (
    PCM_SAMPLE_RATE,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)
from voice_fsm.adapters.openai.errors import translating
from voice_fsm.adapters.openai.http import OpenAIHttpAdapter
from voice_fsm.audio import pcm_to_wav
from voice_fsm.errors import Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import SttSettings

FILENAME = "turn.wav"
"""The API infers the audio format from the file name; raw bytes are rejected."""


class OpenAISpeechToText(OpenAIHttpAdapter[SttSettings]):
    def __init__(
        self, settings: SttSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(settings, client, secrets, stage=Stage.STT)
        # The SDK imports a resource's modules on first use (about 0.2 s): pay it at start-up,
        # not in the first user's turn.
        _ = client.audio.transcriptions

    async def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Upload `pcm` as a WAV file and stream the transcript back.

        Servers that ignore ``stream`` (``whisper-1``, some compatible servers) answer plain
        JSON, on which the SDK's stream yields nothing: the text is then read from that JSON
        body, or, if the body holds none, asked for again without streaming.
        """
        file = (FILENAME, pcm_to_wav(pcm, PCM_SAMPLE_RATE), "audio/wav")
        language = language or self._settings.language
        self._request_starts()
        with translating(Stage.STT, self._secrets):
            stream = await self._client.audio.transcriptions.create(
                model=self.model, file=file, stream=True, language=language or omit
            )
            note(Stage.STT, stream.response.headers.get("x-request-id"))
            deltas: list[str] = []
            try:
                if _is_json(stream):
                    text = _text_from_json(await stream.response.aread())
                    if text is not None:
                        yield TranscriptDone(text)
                        return
                else:
                    async for event in stream:
                        if event.type == "transcript.text.delta":
                            deltas.append(event.delta)
                            if event.delta:
                                yield TranscriptDelta(event.delta)
                        elif event.type == "transcript.text.done":
                            yield TranscriptDone(event.text)
                            return
            finally:
                await stream.close()
            if deltas:
                # The stream ended without its done event: the deltas are the whole transcript.
                yield TranscriptDone("".join(deltas))
                return
            result = await self._client.audio.transcriptions.create(
                model=self.model, file=file, response_format="json", language=language or omit
            )
            note(Stage.STT, result._request_id)
            yield TranscriptDone(result.text)


def _is_json(stream: AsyncStream[TranscriptionStreamEvent]) -> bool:
    content_type: str = stream.response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def _text_from_json(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else None
