"""OpenAILanguageModel against what llama.cpp's own server (llama-cpp-python 0.3.36,
`python -m llama_cpp.server`) sends and accepts, mocked with respx in its measured wire shapes
(docs/llama-cpp-server.md): chunks with no usage, a reply's tool calls as the text the model
wrote, an empty stream when it fails mid-way."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import respx

from voice_fsm.adapters.base import ChatMessage, ReplyEvent, ToolCall, ToolSpec
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import WRITTEN_CALL_ID, OpenAILanguageModel
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import LlmSettings, Settings

LLAMA_URL = "http://127.0.0.1:8000/v1"
OPENAI_URL = "https://api.openai.com/v1"
QUESTION = [ChatMessage("system", "Be brief."), ChatMessage("user", "What is 17 times 23?")]
CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate an arithmetic expression such as 17 * 23.",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
)
CLOCK = ToolSpec(name="clock", description="The time.", parameters={"type": "object"})
TOOLS = (CALCULATOR, CLOCK)


def make_llm(base_url: str = LLAMA_URL) -> OpenAILanguageModel:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key="unused",
        openai_base_url=base_url,
        llm=LlmSettings(max_retries=0, max_output_tokens=60, reasoning_effort=None),
    )
    client = make_openai_client(settings, settings.llm)
    return OpenAILanguageModel(settings.llm, client, settings.secrets())


def llama_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """A chunk as llama-cpp-python's server streams it: no usage, no fingerprint."""
    return {
        "id": "chatcmpl-856f610f-cdb2-4510-8ef5-af85dc1ddfa7",
        "model": "qwen2.5-coder-0.5b",
        "created": 1796114194,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def llama_stream(*contents: str) -> httpx.Response:
    """The server's reply streaming `contents`: a role chunk, the text, "stop", [DONE]."""
    chunks = [
        llama_chunk({"role": "assistant"}),
        *(llama_chunk({"content": text}) for text in contents),
        llama_chunk({}, "stop"),
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, content=body.encode(), headers=SSE)


SSE = {"content-type": "text/event-stream; charset=utf-8", "x-request-id": "eb4f9827c0aa"}


async def reply(
    response: httpx.Response,
    messages: Sequence[ChatMessage] = QUESTION,
    tools: Sequence[ToolSpec] = TOOLS,
    base_url: str = LLAMA_URL,
) -> tuple[list[ReplyEvent], dict[str, Any]]:
    """What the adapter yields for `response`, and the request body it sent."""
    llm = make_llm(base_url)
    with respx.mock(base_url=base_url) as router:
        route = router.post("/chat/completions").mock(return_value=response)
        events = [event async for event in llm.reply(messages, tools=tools)]
    await llm.aclose()
    return events, json.loads(route.calls.last.request.content)


def calls(events: list[ReplyEvent]) -> list[tuple[str, Any]]:
    assert all(isinstance(event, ToolCall) for event in events), events
    return [(e.name, json.loads(e.arguments)) for e in events if isinstance(e, ToolCall)]


# ---------------------------------------------------------------------------- requests


async def test_a_compatible_server_gets_the_reply_limit_under_both_names() -> None:
    # llama-cpp-python's server ignores max_completion_tokens: asked for 5 tokens under that
    # name it wrote 71; under max_tokens, 5.
    _, body = await reply(llama_stream("Hi."))
    assert (body["max_completion_tokens"], body["max_tokens"]) == (60, 60)


async def test_openai_itself_gets_only_the_newer_name() -> None:
    # OpenAI's reasoning models refuse max_tokens.
    _, body = await reply(llama_stream("Hi."), base_url=OPENAI_URL)
    assert body["max_completion_tokens"] == 60
    assert "max_tokens" not in body


async def test_calls_without_text_leave_content_out_for_a_compatible_server() -> None:
    # llama-cpp-python's server answers "content": null with HTTP 500 (a validation error).
    call = ToolCall("call_1", "clock", "{}")
    messages = [
        *QUESTION,
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"time": "08:50"}', tool_call_id="call_1"),
    ]
    _, body = await reply(llama_stream("It is 08:50."), messages)
    assistant = body["messages"][2]
    assert assistant == {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
        ],
    }
    assert body["messages"][3]["role"] == "tool"
    assert [t["function"]["name"] for t in body["tools"]] == ["calculator", "clock"]


# ---------------------------------------------------------------------------- tool calls as text


async def test_a_call_written_as_bare_json_is_a_tool_call() -> None:
    # As measured: Qwen's <tool_call> tags are special tokens, left out of the streamed text.
    pieces = ['{"', "name", '":', ' "', "calculator", '",', ' "', "arguments", '":', ' {"']
    pieces += ["expression", '":', ' "', "1", "7", " *", " ", "2", "3", '"}}']
    events, _ = await reply(llama_stream(*pieces))
    assert calls(events) == [("calculator", {"expression": "17 * 23"})]
    (call,) = events
    assert isinstance(call, ToolCall)
    assert call.call_id.startswith(WRITTEN_CALL_ID)


async def test_calls_between_tags_and_after_blank_lines_are_read() -> None:
    text = (
        '\n<tool_call>\n{"name": "clock", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calculator", "arguments": "{\\"expression\\": \\"2 ** 10\\"}"}'
        "\n</tool_call>"
    )
    events, _ = await reply(llama_stream(text[:3], text[3:9], text[9:]))
    assert calls(events) == [("clock", {}), ("calculator", {"expression": "2 ** 10"})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "weather", "arguments": {"city": "Paris"}}',  # not an offered tool
        '{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n{"result": 391}',
        '{"name": "calculator", "arguments": [1, 2]}',
        "{not even JSON",
    ],
)
async def test_text_that_only_looks_like_a_call_is_said_whole(text: str) -> None:
    events, _ = await reply(llama_stream(text[:5], text[5:]))
    assert events == [text]


async def test_an_answer_streams_piece_by_piece_when_tools_are_offered() -> None:
    events, _ = await reply(llama_stream("The capital", " of France", " is Paris."))
    assert events == ["The capital", " of France", " is Paris."]


async def test_openai_itself_gets_no_reading_of_calls_from_text() -> None:
    text = '{"name": "calculator", "arguments": {"expression": "17 * 23"}}'
    events, _ = await reply(llama_stream(text[:4], text[4:]), base_url=OPENAI_URL)
    assert events == [text[:4], text[4:]]


async def test_a_round_read_from_text_goes_back_as_text_without_tools() -> None:
    call = ToolCall(WRITTEN_CALL_ID + "a1", "calculator", '{"expression": "17 * 23"}')
    messages = [
        *QUESTION,
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"result": 391}', tool_call_id=call.call_id),
    ]
    events, body = await reply(llama_stream("17 times 23 equals 391."), messages)
    assert events == ["17 times 23 equals 391."]
    assert body["messages"][2:] == [
        {"role": "assistant", "content": 'I called calculator({"expression": "17 * 23"}).'},
        {"role": "user", "content": 'It returned {"result": 391}. Answer my question with it.'},
    ]
    # Offered tools again, the 0.5B model answered its results with JSON (docs' figures).
    assert "tools" not in body


async def test_two_results_read_from_text_go_back_as_one_note() -> None:
    first = ToolCall(WRITTEN_CALL_ID + "a1", "clock", "{}")
    second = ToolCall(WRITTEN_CALL_ID + "b2", "calculator", '{"expression": "2 + 2"}')
    messages = [
        *QUESTION,
        ChatMessage("assistant", "Let me check.", tool_calls=(first, second)),
        ChatMessage("tool", '{"time": "08:50"}', tool_call_id=first.call_id),
        ChatMessage("tool", '{"result": 4}', tool_call_id=second.call_id),
        ChatMessage("assistant", "It is 08:50 and 2 plus 2 is 4."),
        ChatMessage("user", "Thanks."),
    ]
    _, body = await reply(llama_stream("You are welcome."), messages)
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": 'Let me check. I called clock({}), calculator({"expression": "2 + 2"}).',
        },
        {
            "role": "user",
            "content": 'They returned {"time": "08:50"}; {"result": 4}. '
            "Answer my question with them.",
        },
        {"role": "assistant", "content": "It is 08:50 and 2 plus 2 is 4."},
        {"role": "user", "content": "Thanks."},
    ]
    assert "tools" in body  # a new question: the tools are offered again


# ---------------------------------------------------------------------------- failures


async def test_a_stream_that_ends_without_an_event_is_an_error() -> None:
    # Measured: a conversation longer than the server's context window, streamed, gets
    # HTTP 200 and an empty body (the ValueError is only in the server's log).
    empty = httpx.Response(200, content=b"", headers=SSE)
    with pytest.raises(ProviderError) as caught:
        await reply(empty)
    err = caught.value
    assert (err.code, err.stage) == (ErrorCode.PROVIDER_ERROR, Stage.LLM)
    assert "ended the stream without a word" in err.message


async def test_a_refused_request_says_what_the_server_said() -> None:
    detail = "Requested tokens (6030) exceed context window of 4096"
    refused = httpx.Response(
        400,
        json={
            "error": {
                "message": detail,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    with pytest.raises(ProviderError) as caught:
        await reply(refused)
    assert caught.value.code == ErrorCode.PROVIDER_ERROR
    assert detail in caught.value.message
