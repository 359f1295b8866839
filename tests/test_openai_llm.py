"""OpenAILanguageModel against Chat Completions' wire format, mocked with respx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
import respx

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.openai_client import make_openai_client
from voice_fsm.adapters.openai_llm import OpenAILanguageModel
from voice_fsm.errors import ErrorCode, ProviderError
from voice_fsm.settings import LlmSettings, Settings

from support.openai_wire import BASE_URL, KEY, drain, error_response

MESSAGES = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "What is the capital of France?"),
    ChatMessage("assistant", "Paris."),
    ChatMessage("user", "And of Italy?"),
]


def make_llm(**overrides: Any) -> OpenAILanguageModel:
    overrides.setdefault("max_retries", 0)
    base_url = overrides.pop("base_url", None)
    key = overrides.pop("key", KEY)
    settings = Settings(
        _env_file=None,
        openai_api_key=key,
        openai_base_url=base_url,
        llm=LlmSettings(**overrides),
    )
    client = make_openai_client(settings, settings.llm)
    return OpenAILanguageModel(settings.llm, client, settings.secrets())


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-CEn0yKZyvQ8bEx3x9a4jP0mRq1Ztk",
        "object": "chat.completion.chunk",
        "created": 1793000000,
        "model": "gpt-6-luna-2026-09-22",
        "service_tier": "default",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
        "obfuscation": "Xy3",
    }


USAGE_CHUNK = {
    "id": "chatcmpl-CEn0yKZyvQ8bEx3x9a4jP0mRq1Ztk",
    "object": "chat.completion.chunk",
    "created": 1793000000,
    "model": "gpt-6-luna-2026-09-22",
    "service_tier": "default",
    "system_fingerprint": None,
    "choices": [],
    "usage": {
        "prompt_tokens": 31,
        "completion_tokens": 4,
        "total_tokens": 35,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}


def sse(events: Iterable[dict[str, Any] | str]) -> bytes:
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def reply_events(*contents: str) -> list[dict[str, Any] | str]:
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": c}) for c in contents),
        chunk({}, finish_reason="stop"),
        USAGE_CHUNK,
        "[DONE]",
    ]


def sse_response(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_1"},
    )


async def collect(llm: OpenAILanguageModel) -> list[str]:
    return [delta async for delta in llm.reply(MESSAGES)]


async def test_streams_content_deltas_and_skips_role_finish_and_usage_chunks() -> None:
    llm = make_llm()
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/chat/completions").mock(
            return_value=sse_response(sse(reply_events("Rome", " is", " the capital.")))
        )
        deltas = await collect(llm)
    await llm.aclose()

    assert deltas == ["Rome", " is", " the capital."]
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body == {
        "model": "gpt-6-luna",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 300,
        "reasoning_effort": "none",
    }


async def test_leaves_out_unset_reasoning_effort_and_sends_temperature() -> None:
    llm = make_llm(
        model="llama3.2",
        reasoning_effort=None,
        temperature=0.3,
        max_output_tokens=50,
        base_url="http://127.0.0.1:11434/v1",
        key=None,
    )
    with respx.mock(base_url="http://127.0.0.1:11434/v1") as router:
        route = router.post("/chat/completions").mock(
            return_value=sse_response(sse(reply_events("Hi.")))
        )
        assert await collect(llm) == ["Hi."]
    await llm.aclose()

    request = route.calls.last.request
    # Compatible local servers accept any key; one is always sent.
    assert request.headers["authorization"] == "Bearer unused"
    body = json.loads(request.content)
    assert "reasoning_effort" not in body
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 50
    assert body["model"] == "llama3.2"


async def test_auth_error_message_is_redacted_and_readable() -> None:
    llm = make_llm()
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/chat/completions").mock(
            return_value=error_response(
                401,
                "Incorrect API key provided: sk-abc123**************************wxyz. You can "
                "find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        )
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    await llm.aclose()

    assert caught.value.message == (
        "OpenAI language model returned 401: Incorrect API key provided: [redacted]. You can "
        "find your API key at https://platform.openai.com/account/api-keys. "
        "(request id req_5b1e)"
    )


async def test_read_timeout_is_a_timeout() -> None:
    llm = make_llm()
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("timed out"))
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    await llm.aclose()

    assert caught.value.code is ErrorCode.PROVIDER_TIMEOUT
    assert caught.value.retryable


async def test_error_payload_mid_stream_is_a_provider_error() -> None:
    events: list[dict[str, Any] | str] = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Rome"}),
        {
            "error": {
                "message": "The model produced invalid content.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    ]
    llm = make_llm()
    received: list[str] = []
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/chat/completions").mock(return_value=sse_response(sse(events)))
        with pytest.raises(ProviderError) as caught:
            await drain(llm.reply(MESSAGES), into=received)
    await llm.aclose()

    assert received == ["Rome"]
    assert caught.value.code is ErrorCode.PROVIDER_ERROR
    assert caught.value.message == (
        "OpenAI language model failed: The model produced invalid content."
    )


class CutStream(httpx.AsyncByteStream):
    """Sends `chunks`, then fails the way a connection cut mid-body does."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (incomplete chunked read)"
        )


async def test_connection_cut_mid_stream_is_unavailable() -> None:
    llm = make_llm()
    received: list[str] = []
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/chat/completions").mock(
            return_value=httpx.Response(
                200,
                stream=CutStream([sse([chunk({"content": "Rome"})])]),
                headers={"content-type": "text/event-stream"},
            )
        )
        with pytest.raises(ProviderError) as caught:
            await drain(llm.reply(MESSAGES), into=received)
    await llm.aclose()

    assert received == ["Rome"]
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "incomplete chunked read" in caught.value.message


async def test_server_error_then_success_is_retried() -> None:
    llm = make_llm(max_retries=1)
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/chat/completions").mock(
            side_effect=[
                httpx.Response(
                    500,
                    json={
                        "error": {
                            "message": "Overloaded",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    # OpenAI says how long to wait; the SDK honours it instead of its backoff.
                    headers={"retry-after-ms": "10"},
                ),
                sse_response(sse(reply_events("Rome."))),
            ]
        )
        assert await collect(llm) == ["Rome."]
    await llm.aclose()

    assert route.call_count == 2
    assert route.calls[1].request.headers["x-stainless-retry-count"] == "1"


async def test_aclose_closes_the_client() -> None:
    llm = make_llm()
    await llm.aclose()
    assert llm._client.is_closed()
    assert llm.provider == "openai"
    assert llm.model == "gpt-6-luna"
