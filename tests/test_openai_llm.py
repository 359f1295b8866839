"""OpenAILanguageModel against Chat Completions' wire format, mocked with respx and served by
the fake OpenAI server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
import pytest
import respx

from voice_fsm.adapters.base import ChatMessage, ReplyEvent, ToolCall, ToolSpec
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.errors import ErrorCode, ProviderError
from voice_fsm.settings import LlmSettings, Settings
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, running_fake_openai
from voice_fsm.testing.fake_tool_calls import calling

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


async def collect(llm: OpenAILanguageModel) -> list[ReplyEvent]:
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
    received: list[ReplyEvent] = []
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
    received: list[ReplyEvent] = []
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


# ---------------------------------------------------------------- tool calls

WEATHER = ToolSpec(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSpec("get_time", "The time now.", {"type": "object", "properties": {}})


def opening(index: int, call_id: str, name: str, **extra: Any) -> dict[str, Any]:
    """The first delta of a call, as OpenAI streams it."""
    function = {"name": name, "arguments": ""}
    return {"index": index, "id": call_id, "type": "function", "function": function, **extra}


def fragment(index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": arguments}}


def calls_chunk(*pieces: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return chunk({"tool_calls": list(pieces)}, finish_reason)


def tool_reply(*middle: dict[str, Any], finish: str | None = "tool_calls") -> list[Any]:
    """A reply: role chunk, `middle`, the finish chunk (unless None), usage, [DONE]."""
    finishing = [chunk({}, finish_reason=finish)] if finish else []
    role = chunk({"role": "assistant", "content": None, "refusal": None})
    return [role, *middle, *finishing, USAGE_CHUNK, "[DONE]"]


async def reply_to(
    events: list[Any], tools: list[ToolSpec], messages: list[ChatMessage] = MESSAGES
) -> tuple[list[object], dict[str, Any]]:
    """What the adapter yields for a reply streaming `events`, and the request's JSON."""
    llm = make_llm()
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/chat/completions").mock(return_value=sse_response(sse(events)))
        got: list[object] = [event async for event in llm.reply(messages, tools=tools)]
    await llm.aclose()
    return got, json.loads(route.calls.last.request.content)


async def test_a_call_whose_arguments_come_in_pieces_follows_the_text() -> None:
    events = tool_reply(
        chunk({"content": "Let me"}),
        chunk({"content": " look."}),
        calls_chunk(opening(0, "call_a", "get_weather")),
        *(calls_chunk(fragment(0, piece)) for piece in ['{"', "city", '":"', "Paris", '"}']),
    )
    got, body = await reply_to(events, [WEATHER])

    assert got == ["Let me", " look.", ToolCall("call_a", "get_weather", '{"city":"Paris"}')]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather now in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]


async def test_parallel_calls_interleaved_come_out_in_index_order() -> None:
    events = tool_reply(
        calls_chunk(opening(0, "call_a", "get_weather")),
        calls_chunk(opening(1, "call_b", "get_weather")),
        calls_chunk(fragment(1, '{"city":')),
        calls_chunk(fragment(0, '{"city":')),
        calls_chunk(fragment(0, '"Paris"}')),
        calls_chunk(fragment(1, '"Rome"}')),
    )
    got, _ = await reply_to(events, [WEATHER])

    assert got == [
        ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
        ToolCall("call_b", "get_weather", '{"city":"Rome"}'),
    ]


async def test_calls_are_yielded_at_the_finish_not_at_the_end_of_the_stream() -> None:
    # What comes after the finish chunk (here a broken one) does not hold the calls back.
    events = tool_reply(calls_chunk(opening(0, "call_a", "get_time")), finish=None)
    events[-2:] = [chunk({}, finish_reason="tool_calls"), {"error": {"message": "Overloaded"}}]
    llm = make_llm()
    received: list[ReplyEvent] = []
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/chat/completions").mock(return_value=sse_response(sse(events)))
        with pytest.raises(ProviderError):
            await drain(llm.reply(MESSAGES, tools=[CLOCK]), into=received)
    await llm.aclose()

    assert received == [ToolCall("call_a", "get_time", "{}")]


@pytest.mark.parametrize(
    "events",
    [
        # Whole calls in one piece each, without `type`, finished with "stop".
        tool_reply(
            calls_chunk(
                {"index": 0, "id": "call_a", "function": {"name": "get_weather",
                                                          "arguments": '{"city":"Paris"}'}},
                {"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": ""}},
            ),
            finish="stop",
        ),
        # The id repeated on every piece, and no finish chunk at all.
        tool_reply(
            calls_chunk(opening(0, "call_a", "get_weather")),
            calls_chunk({"index": 0, "id": "call_a", "function": {"arguments": '{"city":'}}),
            calls_chunk({"index": 0, "id": "call_a", "function": {"arguments": '"Paris"}'}}),
            calls_chunk({"index": 1, "id": "call_b", "function": {"name": "get_time"}}),
            finish=None,
        ),
        # Parallel calls all at index 0, told apart by their ids; arguments sent as an object.
        tool_reply(
            calls_chunk({"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}),
            calls_chunk({"index": 0, "id": "call_b", "type": "function",
                         "function": {"name": "get_time", "arguments": "{}"}}),
        ),
    ],
    ids=["whole-calls", "repeated-ids", "same-index"],
)  # fmt: skip
async def test_compatible_servers_that_stream_calls_their_own_way(events: list[Any]) -> None:
    got, _ = await reply_to(events, [WEATHER, CLOCK])

    assert [(call.call_id, call.name) for call in got if isinstance(call, ToolCall)] == [
        ("call_a", "get_weather"),
        ("call_b", "get_time"),
    ]
    assert [json.loads(call.arguments) for call in got if isinstance(call, ToolCall)] == [
        {"city": "Paris"},
        {},
    ]


async def test_a_call_without_an_id_gets_one() -> None:
    events = tool_reply(calls_chunk({"index": 0, "function": {"name": "get_time"}}))
    (call,), _ = await reply_to(events, [CLOCK])

    assert isinstance(call, ToolCall)
    assert call.call_id.startswith("call_")
    assert len(call.call_id) > len("call_")
    assert (call.name, call.arguments) == ("get_time", "{}")


async def test_a_call_without_a_name_is_a_provider_error() -> None:
    events = tool_reply(calls_chunk({"index": 0, "id": "call_a", "function": {"arguments": "{}"}}))
    with pytest.raises(ProviderError) as caught:
        await reply_to(events, [CLOCK])

    assert caught.value.code is ErrorCode.PROVIDER_ERROR
    assert caught.value.message == (
        "OpenAI language model sent a broken reply: the model streamed a tool call without "
        "a function name."
    )


async def test_arguments_without_end_are_cut_off_with_an_error() -> None:
    piece = calls_chunk(fragment(0, "x" * 100_000))
    events = tool_reply(calls_chunk(opening(0, "call_a", "get_weather")), piece, piece, piece)
    with pytest.raises(ProviderError) as caught:
        await reply_to(events, [WEATHER])

    assert "arguments of a tool call passed" in caught.value.message


async def test_no_tools_field_without_tools() -> None:
    _, body = await reply_to(reply_events("Hi."), [])

    assert "tools" not in body


ROUND_TRIP = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Weather in Paris and Rome?"),
    ChatMessage(
        "assistant",
        "",
        tool_calls=(
            ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
            ToolCall("call_b", "get_weather", '{"city":"Rome"}'),
        ),
    ),
    ChatMessage("tool", '{"sky":"sunny"}', tool_call_id="call_a"),
    ChatMessage("tool", '{"sky":"rain"}', tool_call_id="call_b"),
    ChatMessage("assistant", "Sunny in Paris, rain in Rome."),
    ChatMessage("user", "And now?"),
    ChatMessage("assistant", "Checking.", tool_calls=(ToolCall("call_c", "get_time", "{}"),)),
    ChatMessage("tool", "12:00", tool_call_id="call_c"),
]
ROUND_TRIP_JSON = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": '{"sky":"sunny"}'},
    {"role": "tool", "tool_call_id": "call_b", "content": '{"sky":"rain"}'},
    {"role": "assistant", "content": "Sunny in Paris, rain in Rome."},
    {"role": "user", "content": "And now?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_c", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_c", "content": "12:00"},
]  # fmt: skip


async def test_a_tool_round_trip_is_sent_in_openai_shape() -> None:
    got, body = await reply_to(reply_events("It is noon."), [WEATHER, CLOCK], ROUND_TRIP)

    assert got == ["It is noon."]
    assert body["messages"] == ROUND_TRIP_JSON
    assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather", "get_time"]


# ---------------------------------------------------------------- against the fake server


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAIConfig, OpenAILanguageModel]]:
    config = FakeOpenAIConfig(api_key=KEY, llm_first_token_delay=0, llm_token_delay=0)
    with running_fake_openai(config) as base_url:
        yield config, make_llm(base_url=base_url)


async def test_a_tool_round_trip_through_the_fake_server(
    fake: tuple[FakeOpenAIConfig, OpenAILanguageModel],
) -> None:
    config, llm = fake
    config.chat_script = calling(
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
        text="Let me look that up.",
        answer=lambda results: "Paris: " + results[0] + ", Rome: " + results[1] + ".",
    )
    history = [ChatMessage("system", "Be brief."), ChatMessage("user", "Weather?")]
    first = [event async for event in llm.reply(history, tools=[WEATHER])]

    text = "".join(event for event in first if isinstance(event, str))
    calls = [event for event in first if isinstance(event, ToolCall)]
    assert text == "Let me look that up."
    assert first[-2:] == calls  # the calls come after the text
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    history += [
        ChatMessage("assistant", text, tool_calls=tuple(calls)),
        ChatMessage("tool", "sunny", tool_call_id=calls[0].call_id),
        ChatMessage("tool", "rain", tool_call_id=calls[1].call_id),
    ]
    second = [event async for event in llm.reply(history, tools=[WEATHER])]
    await llm.aclose()

    assert "".join(str(event) for event in second) == "Paris: sunny, Rome: rain."
    sent = config.received("chat")[1].json
    assert sent is not None
    assert sent["messages"][2:] == [
        {
            "role": "assistant",
            "content": "Let me look that up.",
            "tool_calls": [
                {"id": call.call_id, "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for call in calls
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1].call_id, "content": "rain"},
    ]  # fmt: skip
    assert sent["tools"][0]["function"]["name"] == "get_weather"


async def test_only_tool_calls_and_no_tools_through_the_fake_server(
    fake: tuple[FakeOpenAIConfig, OpenAILanguageModel],
) -> None:
    config, llm = fake
    config.chat_script = calling(("get_time", {}))
    with_tools = [event async for event in llm.reply(MESSAGES, tools=[CLOCK])]
    without = [event async for event in llm.reply(MESSAGES)]
    await llm.aclose()

    assert len(with_tools) == 1
    assert isinstance(with_tools[0], ToolCall)
    assert (with_tools[0].name, with_tools[0].arguments) == ("get_time", "{}")
    assert "".join(str(event) for event in without) == config.reply
    first, second = config.received("chat")
    assert first.json is not None
    assert second.json is not None
    assert "tools" in first.json
    assert "tools" not in second.json
