"""OpenAI's wire shapes shared by the adapter tests (respx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

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
