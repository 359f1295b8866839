"""Function calling over `/v1/realtime` through the stock `openai` SDK, on a real server whose
language model is OpenAI's adapter on the fake OpenAI server (which scripts the model's tool
calls in OpenAI's streaming shape, checks the tool messages as OpenAI does, and records each
request): the Realtime flow for the client's tools (the response ends at the call, the client
returns `function_call_output` and asks for the next response, which is spoken), and a server
tool the operator configured, run within one response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from test_realtime_endpoint import MODEL, Realtime, commit_a_turn, kinds, sdk_client, serving
from voice_fsm.adapters.fake import FakeSpeechToText, FakeTextToSpeech
from voice_fsm.providers import Pipeline
from voice_fsm.testing import FakeOpenAIConfig
from voice_fsm.testing.fake_tool_calls import calling
from voice_fsm.tool_settings import ToolSettings
from voice_fsm.tools.toolbox import build_toolbox

from session_harness import make_settings

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def fake(fake_openai: tuple[FakeOpenAIConfig, str]) -> FakeOpenAIConfig:
    return fake_openai[0]


async def connected(
    base_url: str, make_openai_llm: Callable[[str], Any], *, server_tools: bool = False
) -> AsyncIterator[Realtime]:
    toolbox = build_toolbox(ToolSettings(builtins="on"), local_llm=False) if server_tools else None
    pipeline = Pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=make_openai_llm(base_url),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002),
        tools=toolbox,
    )
    async with (
        serving(make_settings(), pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


@pytest.fixture
async def rt(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: Callable[[str], Any]
) -> AsyncIterator[Realtime]:
    async for rt in connected(fake_openai[1], make_openai_llm):
        yield rt


@pytest.fixture
async def rt_server_tools(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: Callable[[str], Any]
) -> AsyncIterator[Realtime]:
    async for rt in connected(fake_openai[1], make_openai_llm, server_tools=True):
        yield rt


async def configure(rt: Realtime, tools: list[dict[str, Any]]) -> dict[str, Any]:
    await rt.created()
    session = {"type": "realtime", "audio": {"input": {"turn_detection": None}}, "tools": tools}
    await rt.send({"type": "session.update", "session": session})
    return (await rt.until("session.updated"))[-1]["session"]


def chat_bodies(config: FakeOpenAIConfig) -> list[dict[str, Any]]:
    return [request.json for request in config.received("chat") if request.json is not None]


async def test_a_client_function_call_round_trip_ends_in_a_spoken_answer(
    rt: Realtime, fake: FakeOpenAIConfig
) -> None:
    fake.chat_script = calling(("get_weather", {"city": "Paris"}))
    session = await configure(rt, [WEATHER])
    assert session["tools"] == [WEATHER]
    assert session["tool_choice"] == "auto"
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    events = await rt.done()  # a response that ends at a call, with rate_limits.updated
    assert kinds(events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    call = events[-1]["response"]["output"]
    assert events[-1]["response"]["status"] == "completed"
    assert [item["type"] for item in call] == ["function_call"]
    call_id, arguments = call[0]["call_id"], call[0]["arguments"]
    assert json.loads(arguments) == {"city": "Paris"}
    assert events[4]["name"] == "get_weather"
    assert events[3]["delta"] == events[4]["arguments"] == arguments

    # The client runs the function, returns its output, and asks for the next response.
    output = {"type": "function_call_output", "call_id": call_id, "output": "18 °C and sunny"}
    await rt.send({"type": "conversation.item.create", "item": output})
    added, done = await rt.next(), await rt.next()
    assert kinds([added, done]) == ["conversation.item.added", "conversation.item.done"]
    assert added["previous_item_id"] == call[0]["id"]
    assert done["item"]["output"] == "18 °C and sunny"
    await rt.send({"type": "response.create"})
    answer = await rt.until("response.done")
    assert answer[-1]["response"]["status"] == "completed"
    assert answer[-1]["response"]["id"] != events[-1]["response"]["id"]
    spoken = answer[-1]["response"]["output"][0]["content"][0]["transcript"]
    assert spoken == "Here is what I found: 18 °C and sunny"
    assert any(e["type"] == "response.output_audio.delta" for e in answer)

    # The model got the call and its output as OpenAI expects them (the fake checks them).
    first, second = chat_bodies(fake)
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == call_id
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": "18 °C and sunny"}


async def test_an_output_for_no_waiting_call_is_refused(rt: Realtime) -> None:
    await configure(rt, [WEATHER])
    output = {"type": "function_call_output", "call_id": "call_nope", "output": "x"}
    await rt.send({"type": "conversation.item.create", "item": output, "event_id": "e1"})
    error = (await rt.next())["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_value",
        "item.call_id",
        "e1",
    )


async def test_response_create_without_the_output_tells_the_model_so(
    rt: Realtime, fake: FakeOpenAIConfig
) -> None:
    fake.chat_script = calling(("get_weather", {"city": "Paris"}))
    await configure(rt, [WEATHER])
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    await rt.until("response.done")
    await rt.send({"type": "response.create"})
    answer = (await rt.until("response.done"))[-1]["response"]
    assert answer["status"] == "completed"
    assert "gave no output" in answer["output"][0]["content"][0]["transcript"]


async def test_an_mcp_tool_or_another_tool_choice_is_refused(rt: Realtime) -> None:
    await rt.created()
    mcp = {"type": "mcp", "server_label": "x", "server_url": "https://example.com/mcp"}
    await rt.send({"type": "session.update", "session": {"type": "realtime", "tools": [mcp]}})
    choice = {"type": "realtime", "tool_choice": "required"}
    await rt.send({"type": "session.update", "session": choice})
    errors = [(await rt.next())["error"] for _ in range(2)]
    assert [(e["code"], e["param"]) for e in errors] == [
        ("unsupported_value", "session.tools[0]"),
        ("unsupported_value", "session.tool_choice"),
    ]


async def test_a_server_tool_runs_within_one_response(
    rt_server_tools: Realtime, fake: FakeOpenAIConfig
) -> None:
    rt = rt_server_tools
    fake.chat_script = calling(("calculator", {"expression": "17 * 23"}))
    session = await configure(rt, [])
    assert "tools" not in session  # the operator's tools are not the client's
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    events = await rt.until("response.done")
    names = kinds(events)
    assert names.count("response.created") == 1
    assert "response.function_call_arguments.done" not in names
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [item["type"] for item in done["output"]] == ["message"]
    spoken = done["output"][0]["content"][0]["transcript"]
    assert "391" in spoken
    assert len(chat_bodies(fake)) == 2  # the call, then its result answered
