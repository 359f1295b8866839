"""The fake OpenAI server, checked through the real `openai` SDK and raw HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from websockets.exceptions import InvalidStatus

from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec
from voice_fsm.adapters.fake import FakeLanguageModel, ScriptedReply
from voice_fsm.audio import pcm_to_wav
from voice_fsm.testing import FakeOpenAIConfig, create_fake_openai_app, speech_pcm
from voice_fsm.testing.fake_openai import parse_multipart, running_fake_openai, words
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.testing.fake_tool_calls import calling, disobedient

KEY = "sk-test-0123456789"
WAV = pcm_to_wav(bytes(48_000))  # one second of silence


@pytest.fixture
def config() -> FakeOpenAIConfig:
    return FakeOpenAIConfig(
        api_key=KEY,
        stt_delay=0,
        llm_first_token_delay=0,
        llm_token_delay=0,
        tts_first_audio_delay=0,
        tts_chunk_delay=0,
    )


@pytest.fixture
async def http(config: FakeOpenAIConfig) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_openai_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield client


def sdk(http: httpx.AsyncClient, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://fake/v1", http_client=http, max_retries=0
    )


async def test_streaming_transcription(config: FakeOpenAIConfig, http: httpx.AsyncClient) -> None:
    stream = await sdk(http).audio.transcriptions.create(
        model="gpt-transcribe", file=("turn.wav", WAV, "audio/wav"), stream=True, language="en"
    )
    events = [event async for event in stream]
    assert [event.type for event in events[:-1]] == ["transcript.text.delta"] * 6
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == config.transcript
    assert done.usage is not None
    assert "".join(getattr(event, "delta", "") for event in events) == config.transcript
    (request,) = config.received("transcriptions")
    assert request.fields == {"model": "gpt-transcribe", "stream": "true", "language": "en"}
    assert request.file is not None
    assert (request.file.name, request.file.content_type) == ("turn.wav", "audio/wav")
    assert request.file.data == WAV
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_raw_sse_of_a_transcription_has_no_done_marker(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"model": "gpt-transcribe", "stream": "true"},
        files={"file": ("turn.wav", WAV, "audio/wav")},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    assert response.text.endswith("\n\n")


async def test_plain_and_whisper_transcriptions_answer_json(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    client = sdk(http)
    result = await client.audio.transcriptions.create(
        model="gpt-transcribe", file=("turn.wav", WAV, "audio/wav")
    )
    assert result.text == config.transcript
    # whisper-1 ignores stream=true: the SDK's stream then yields nothing.
    stream = await client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", WAV, "audio/wav"), stream=True
    )
    assert [event async for event in stream] == []


async def test_raw_bytes_upload_is_rejected_like_openai(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(http).audio.transcriptions.create(model="gpt-transcribe", file=WAV)
    assert caught.value.code == "invalid_value"
    assert "Invalid file format" in caught.value.message


async def test_a_corrupt_wav_is_rejected(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError, match="corrupted"):
        await sdk(http).audio.transcriptions.create(
            model="gpt-transcribe", file=("turn.wav", b"RIFF....", "audio/wav")
        )


async def test_streaming_chat(config: FakeOpenAIConfig, http: httpx.AsyncClient) -> None:
    stream = await sdk(http).chat.completions.create(
        model="gpt-6-luna",
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert contents == ["The", " capital", " of", " France", " is", " Paris."]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    (request,) = config.received("chat")
    assert request.json is not None
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}


async def test_raw_chat_stream_ends_with_done(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = await http.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body
    )
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunk = json.loads(lines[0].removeprefix("data: "))
    assert chunk["object"] == "chat.completion.chunk"
    assert "usage" not in chunk  # no include_usage, no usage field


async def test_chat_without_stream_and_with_a_token_limit(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    client = sdk(http)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hi"}
    ]
    completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == config.reply
    short = await client.chat.completions.create(
        model="m", messages=messages, max_completion_tokens=2
    )
    assert short.choices[0].message.content == "The capital"
    assert short.choices[0].finish_reason == "length"


async def test_speech_streams_deterministic_pcm(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.tts_chunk_bytes = 4801  # odd: clients must re-frame
    async with sdk(http).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", input="Hello there.", voice="alloy", response_format="pcm"
    ) as response:
        audio = b"".join([chunk async for chunk in response.iter_bytes()])
    assert audio == speech_pcm("Hello there.")
    assert len(speech_pcm("Hello there, how are you?")) > len(audio)
    (request,) = config.received("speech")
    assert request.json is not None
    assert request.json["response_format"] == "pcm"
    assert request.headers["accept"] == "application/octet-stream"


async def test_speech_rejects_an_unknown_voice(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(http).audio.speech.create(
            model="gpt-4o-mini-tts", input="Hi.", voice="robot", response_format="pcm"
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["param"], body["code"]) == (
        "invalid_request_error",
        "voice",
        "invalid_value",
    )
    assert body["message"].startswith("Invalid value: 'robot'. Supported values are: 'alloy'")


async def test_models_list_has_shutdown_dates(http: httpx.AsyncClient) -> None:
    page = await sdk(http).models.list()
    dates = {model.id: model.model_extra.get("shutdown_date") for model in page.data}  # type: ignore[union-attr]
    assert dates["gpt-4o-mini-tts"] == "2027-01-06"
    assert dates["gpt-transcribe"] is None


async def test_a_wrong_key_gets_openai_401(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(http, "sk-wrong-0000000000").models.list()
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id is not None
    assert "sk-wrong-0000000000" not in caught.value.message  # masked, like OpenAI does
    assert config.requests[-1].headers["authorization"] == "Bearer sk-wrong-0000000000"


async def test_a_missing_key_and_an_unknown_url(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = await http.post("/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (403, openai.PermissionDeniedError),
    ],
)
async def test_configured_failures(
    config: FakeOpenAIConfig, http: httpx.AsyncClient, status: int, error: type[Exception]
) -> None:
    config.failures["chat"] = status
    with pytest.raises(error):
        await sdk(http).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )


def test_words_join_back() -> None:
    for text in ("Hello there.", "  two  spaces  ", "", "one"):
        assert "".join(words(text)) == text


def test_parse_multipart_keeps_binary_exactly() -> None:
    payload = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"model": "m", "stream": "true"},
        files={"file": ("a b.wav", payload, "audio/wav")},
    )
    form, upload = parse_multipart(request.headers["content-type"], request.read())
    assert form == {"model": "m", "stream": "true"}
    assert upload is not None
    assert (upload.name, upload.content_type, upload.data) == ("a b.wav", "audio/wav", payload)


def test_running_in_a_thread(config: FakeOpenAIConfig) -> None:
    with running_fake_openai(config) as base_url:
        response = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/v1")


async def test_without_realtime_the_sdks_realtime_connection_is_refused_with_404(
    config: FakeOpenAIConfig,
) -> None:
    # A compatible server that has no Realtime endpoint: the SDK's handshake fails with 404
    # (what voice-fsm's live transcription must fall back from), and the fake records it.
    with running_fake_openai(config) as base_url:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
        with pytest.raises(InvalidStatus) as refused:
            async with client.realtime.connect(
                extra_query={"intent": "transcription"}, model=""
            ) as connection:
                await connection.recv()
    assert refused.value.response.status_code == 404
    assert json.loads(refused.value.response.body or b"{}")["error"]["message"] == (
        "Invalid URL (GET /v1/realtime)"
    )
    (handshake,) = config.received("websocket")
    assert handshake.path == "/v1/realtime"
    assert handshake.fields == {"intent": "transcription", "model": ""}
    assert handshake.headers["authorization"] == f"Bearer {KEY}"


async def test_with_realtime_the_same_port_serves_the_realtime_endpoint(
    config: FakeOpenAIConfig,
) -> None:
    realtime = FakeRealtimeConfig()
    with running_fake_openai(config, realtime=realtime) as base_url:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0) as client:
            async with client.realtime.connect(
                extra_query={"intent": "transcription"}, model=""
            ) as connection:
                created = await connection.recv()
            models = await client.models.list()
    assert created.type == "session.created"
    assert created.session.type == "transcription"
    assert "gpt-transcribe" in [model.id for model in models.data]  # the HTTP API beside it
    assert len(realtime.connections) == 1
    assert config.received("websocket") == []


# ---------------------------------------------------------------- tool calls

WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris, Rome?"}]
PARIS_AND_ROME = calling(
    ("get_weather", {"city": "Paris"}),
    ("get_weather", {"city": "Rome"}),
    text="Let me look that up.",
)


async def raw_chunks(http: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed chat completion, as sent."""
    response = await http.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "gpt-6-luna", "stream": True, **body},
    )
    assert response.status_code == 200, response.text
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


async def test_streamed_tool_calls_have_openais_exact_shape(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.chat_script = PARIS_AND_ROME
    chunks = await raw_chunks(
        http, messages=USER, tools=[WEATHER_TOOL], stream_options={"include_usage": True}
    )
    for raw in chunks:  # every chunk is one the SDK's types accept as they are
        ChatCompletionChunk.model_validate(raw, strict=True)
    deltas = [raw["choices"][0]["delta"] for raw in chunks if raw["choices"]]
    text = "".join(delta.get("content") or "" for delta in deltas)
    pieces = [piece for delta in deltas for piece in delta.get("tool_calls", [])]
    openings = [piece for piece in pieces if "id" in piece]

    assert text == "Let me look that up."
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert all("tool_calls" not in delta for delta in deltas[: len(words(text)) + 1])
    assert [sorted(piece) for piece in openings] == [["function", "id", "index", "type"]] * 2
    assert [piece["index"] for piece in openings] == [0, 1]
    for piece in openings:
        assert re.fullmatch(r"call_[0-9a-zA-Z]{24}", piece["id"])
        assert piece["type"] == "function"
        assert piece["function"] == {"name": "get_weather", "arguments": ""}
    fragments = {
        index: [p["function"]["arguments"] for p in pieces if "id" not in p and p["index"] == index]
        for index in (0, 1)
    }
    assert all(
        sorted(p) == ["function", "index"] and list(p["function"]) == ["arguments"]
        for p in pieces
        if "id" not in p
    )
    assert len(fragments[0]) > 1  # the arguments come in several pieces
    assert json.loads("".join(fragments[0])) == {"city": "Paris"}
    assert json.loads("".join(fragments[1])) == {"city": "Rome"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > len(words(text))


async def test_a_reply_of_only_calls_opens_with_the_first_call(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.chat_script = calling(("get_weather", {"city": "Paris"}))
    chunks = await raw_chunks(http, messages=USER, tools=[WEATHER_TOOL])
    for raw in chunks:
        ChatCompletionChunk.model_validate(raw, strict=True)

    first = chunks[0]["choices"][0]["delta"]
    assert (first["role"], first["content"]) == ("assistant", None)
    assert first["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}


async def test_the_sdks_stream_helper_rebuilds_both_calls(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.chat_script = PARIS_AND_ROME
    # The accumulation behind the SDK's `chat.completions.stream` (which insists on strict
    # tools), fed the chunks as the SDK reads them.
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    stream = await sdk(http).chat.completions.create(
        model="gpt-6-luna", messages=USER, tools=[WEATHER_TOOL], stream=True
    )
    kinds = [event.type async for chunk in stream for event in state.handle_chunk(chunk)]
    completion = state.get_final_completion()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up."
    calls = choice.message.tool_calls or []
    assert [(call.function.name, json.loads(call.function.arguments)) for call in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert kinds.count("tool_calls.function.arguments.done") == 2


async def test_tool_calls_without_streaming(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.chat_script = PARIS_AND_ROME
    completion = await sdk(http).chat.completions.create(
        model="gpt-6-luna", messages=USER, tools=[WEATHER_TOOL]
    )
    ChatCompletion.model_validate(completion.model_dump(), strict=True)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up."
    calls = choice.message.tool_calls or []
    assert [call.type for call in calls] == ["function", "function"]
    assert calls[1].type == "function"
    assert json.loads(calls[1].function.arguments) == {"city": "Rome"}


async def test_the_scripted_model_answers_the_results_and_the_history_is_recorded(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.chat_script = calling(
        ("get_weather", {"city": "Paris"}), answer=lambda results: f"It is {results[0]}."
    )
    client = sdk(http)
    first = await client.chat.completions.create(
        model="gpt-6-luna", messages=USER, tools=[WEATHER_TOOL]
    )
    (call,) = first.choices[0].message.tool_calls or []
    history: list[ChatCompletionMessageParam] = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await client.chat.completions.create(
        model="gpt-6-luna", messages=history, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == "It is sunny."
    assert second.choices[0].message.tool_calls is None
    recorded = config.received("chat")[1].json
    assert recorded is not None
    assert recorded["tools"] == [WEATHER_TOOL]
    assert [m["role"] for m in recorded["messages"]] == ["user", "assistant", "tool"]
    assert recorded["messages"][1]["tool_calls"][0]["id"] == call.id
    assert recorded["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


async def test_without_a_script_tools_change_nothing(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    completion = await sdk(http).chat.completions.create(
        model="m", messages=USER, tools=[WEATHER_TOOL]
    )
    assert completion.choices[0].message.content == config.reply
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("mistake", "name", "valid_json"),
    [("unknown-tool", "launch_rockets", True), ("invalid-json", "get_weather", False)],
)
async def test_a_disobedient_model(
    config: FakeOpenAIConfig,
    http: httpx.AsyncClient,
    mistake: Literal["unknown-tool", "invalid-json"],
    name: str,
    valid_json: bool,
) -> None:
    config.chat_script = disobedient(mistake)
    chunks = await raw_chunks(http, messages=USER, tools=[WEATHER_TOOL])
    pieces = [p for c in chunks for p in c["choices"][0]["delta"].get("tool_calls", [])]
    arguments = "".join(p["function"]["arguments"] for p in pieces)

    assert [p["function"]["name"] for p in pieces if "id" in p] == [name]
    try:
        json.loads(arguments)
        parsed = True
    except json.JSONDecodeError:
        parsed = False
    assert parsed is valid_json


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": USER, "tools": []}, "Invalid 'tools': empty array."),
        (
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "Invalid 'tools[0].function.name'",
        ),
        (
            {"messages": [*USER, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
            "messages with role 'tool' must be a response",
        ),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_x", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "user", "content": "And?"},
                ]
            },
            "did not have response messages: call_x",
        ),
    ],
    ids=["empty-tools", "bad-name", "orphan-result", "unanswered-call"],
)  # fmt: skip
async def test_tools_and_tool_messages_are_checked_as_openai_does(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "m", **body},
    )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


# ---------------------------------------------------------------- the in-process fake model


async def test_fake_language_model_follows_its_script_then_its_reply() -> None:
    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    llm = FakeLanguageModel(
        "Done.", script=[ScriptedReply("Let me look.", (call,)), ScriptedReply(tool_calls=(call,))]
    )
    spec = ToolSpec("get_weather", "Weather.", {"type": "object"})
    asked = [ChatMessage("user", "Weather?")]
    replies = [[event async for event in llm.reply(asked, tools=[spec])] for _ in range(3)]

    assert replies == [["Let", " me", " look.", call], [call], ["Done."]]
    assert llm.tools_offered == [[spec]] * 3
    assert llm.ledger.calls == [asked] * 3
    assert llm.ledger.open == 0


async def test_fake_language_model_with_a_script_function() -> None:
    def script(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> ScriptedReply | None:
        if messages[-1].role == "tool":
            return ScriptedReply(f"It is {messages[-1].content}.")
        return None

    llm = FakeLanguageModel("Hello.", script=script)
    result = [ChatMessage("tool", "sunny", tool_call_id="call_1")]

    assert [e async for e in llm.reply(result)] == ["It", " is", " sunny."]
    assert [e async for e in llm.reply([ChatMessage("user", "Hi")])] == ["Hello."]
