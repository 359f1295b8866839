"""``POST /v1/audio/speech`` on the embedded Piper voice: PCM16 24 kHz mono (``pcm``, as
OpenAI's) or a WAV of it (``wav``), streamed sentence by sentence as it is synthesized.

The voice is the engine's (`VOICE_FSM_LOCAL__TTS_VOICE`): a request's ``voice`` is accepted
and not used, like ``speed`` and ``instructions``; a client cannot make the engines load
other files. Other formats (mp3, opus, aac, flac) and ``stream_format=sse`` are refused."""

from __future__ import annotations

import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from voice_fsm.adapters.base import PCM_SAMPLE_RATE
from voice_fsm.engines.api_errors import invalid
from voice_fsm.engines.bodies import read_json
from voice_fsm.engines.loading import loaded
from voice_fsm.engines.streaming import open_stream, raw

MAX_INPUT_CHARS = 4096
"""OpenAI's limit on the text of one request."""
MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav"}


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str | dict[str, str] = "alloy"
    response_format: str = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=MAX_INPUT_CHARS)
    stream_format: Literal["audio", "sse"] = "audio"


async def speech(request: Request) -> Response:
    engines = loaded(request.app.state)
    body = await read_json(request, SpeechRequest)
    engines.check_model("tts", body.model)
    media_type = MEDIA_TYPES.get(body.response_format)
    if media_type is None:
        raise invalid(
            "response_format",
            f"response_format '{body.response_format[:32]}' is not supported by this server: "
            "use pcm (16-bit 24 kHz mono) or wav.",
            code="unsupported_value",
        )
    if body.stream_format != "audio":
        raise invalid(
            "stream_format",
            "stream_format 'sse' is not supported by this server: use audio.",
            code="unsupported_value",
        )
    admission = request.app.state.metrics.admit("tts")
    audio = engines.tts.synthesize(body.input)
    opened = await open_stream(request, admission, audio, "text-to-speech")
    header = wav_header() if body.response_format == "wav" else b""
    return StreamingResponse(raw(opened, header), media_type=media_type)


def wav_header() -> bytes:
    """A WAV header for PCM16 24 kHz mono of a length not known yet (the sizes at their
    maximum, as streaming encoders write them)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, PCM_SAMPLE_RATE, PCM_SAMPLE_RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )
