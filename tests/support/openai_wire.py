"""OpenAI's wire shapes and the OpenAI adapters, shared by the adapter tests (respx)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from openai import AsyncOpenAI
from pydantic import SecretStr

from voice_fsm.adapters.base import ChatMessage, TranscriptDelta
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.adapters.openai.stt import OpenAISpeechToText
from voice_fsm.adapters.openai.tts import OpenAITextToSpeech
from voice_fsm.errors import Stage
from voice_fsm.settings import LlmSettings, Settings, SttSettings, TtsSettings

BASE_URL = "https://api.openai.com/v1"
KEY = "sk-proj-abc123DEF456ghi789"
REQUEST_ID = "req_5b1e"

T = TypeVar("T")
STAGE_SETTINGS = {"stt": SttSettings, "llm": LlmSettings, "tts": TtsSettings}


def openai_settings(
    stage: str, *, base_url: str | None = None, key: str = KEY, **options: Any
) -> Settings:
    """Settings with OpenAI (at `base_url`, else its own) for `stage`, whose settings are
    `options`, without retries unless they say: what the adapter tests build adapters from."""
    options.setdefault("max_retries", 0)
    return Settings(
        _env_file=None,
        openai_api_key=SecretStr(key),
        openai_base_url=base_url,
        **{stage: STAGE_SETTINGS[stage](**options)},
    )


def error_response(
    status: int, message: str, type_: str, code: str | None, **headers: str
) -> httpx.Response:
    """OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, with a request id."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return httpx.Response(status, json=body, headers={"x-request-id": REQUEST_ID, **headers})


async def drain(items: AsyncIterator[T], into: list[T]) -> None:
    """Collect `items` into `into`, keeping what arrived before a failure."""
    async for item in items:
        into.append(item)


class HangingStream(httpx.AsyncByteStream):
    """A response body that sends `chunks`, then waits forever; records whether the client
    closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class HttpAdapter:
    """One OpenAI HTTP adapter, for the tests they all must pass: how to build it, its
    endpoint, how its errors name it, one call, and a first piece of a 200 answer with what
    the call yields for it."""

    stage: Stage
    path: str
    name: str
    make: Callable[[Settings, AsyncOpenAI], Any]
    open: Callable[[Any], AsyncIterator[Any]]
    content_type: str
    first_body: bytes
    first_item: Any

    def build(self) -> Any:
        settings = openai_settings(self.stage.value)
        return self.make(settings, make_openai_client(settings, getattr(settings, self.stage)))


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


HTTP_ADAPTERS = [
    HttpAdapter(
        Stage.STT,
        "/audio/transcriptions",
        "speech-to-text",
        lambda s, c: OpenAISpeechToText(s.stt, c, s.secrets()),
        lambda stt: stt.transcribe(b"\x00\x01" * 2400),
        "text/event-stream",
        _sse({"type": "transcript.text.delta", "delta": "Hel", "logprobs": None}),
        TranscriptDelta("Hel"),
    ),
    HttpAdapter(
        Stage.LLM,
        "/chat/completions",
        "language model",
        lambda s, c: OpenAILanguageModel(s.llm, c, s.secrets()),
        lambda llm: llm.reply([ChatMessage("user", "Hello?")]),
        "text/event-stream",
        _sse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-6-luna",
                "choices": [{"index": 0, "delta": {"content": "Rome"}, "finish_reason": None}],
            }
        ),
        "Rome",
    ),
    HttpAdapter(
        Stage.TTS,
        "/audio/speech",
        "text-to-speech",
        lambda s, c: OpenAITextToSpeech(s.tts, c, s.secrets()),
        lambda tts: tts.synthesize("Hello."),
        "audio/pcm",
        bytes(range(7)),
        bytes(range(7)),
    ),
]
