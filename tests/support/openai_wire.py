"""OpenAI's wire shapes shared by the adapter tests (respx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import httpx

BASE_URL = "https://api.openai.com/v1"
KEY = "sk-proj-abc123DEF456ghi789"
REQUEST_ID = "req_5b1e"

T = TypeVar("T")


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
