"""Turns with tool calls, through a real `Session` with fake adapters: the machine goes
through `acting`, the calls run on the server or the client, the results reach the language
model, a slow tool gets a filler, and an interruption cancels the calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voice_fsm.adapters.base import ChatMessage, ReplyEvent, ToolCall, ToolSpec
from voice_fsm.events import (
    ClientTool,
    InputAudioStart,
    InputAudioStop,
    ResponseCancel,
    SessionConfig,
    SessionUpdate,
    ToolResultCommand,
)
from voice_fsm.settings import Settings
from voice_fsm.tools.calls import ToolResult

from conftest import ClientFactory
from session_harness import Client, Received, fake_pipeline, kinds, make_settings

START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@dataclass
class Answer:
    text: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments)


class ScriptedModel:
    """A language model that gives `answers` in order, one per call, recording each request."""

    provider = "fake"
    model = "scripted"

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[list[ChatMessage], list[ToolSpec]]] = []

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyEvent]:
        self.requests.append((list(messages), list(tools)))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        for word in answer.text.split(" ") if answer.text else []:
            await asyncio.sleep(0.002)
            yield word + " "
        for index, (name, arguments) in enumerate(answer.calls):
            yield ToolCall(f"call_{len(self.requests)}_{index}", name, arguments)

    async def aclose(self) -> None:
        return None


class FakeToolbox:
    """Server tools as plain async functions of their parsed arguments."""

    def __init__(self, **tools: Callable[..., Awaitable[Any]]) -> None:
        self.tools = tools
        self.cancelled: list[str] = []

    def specs(self) -> list[ToolSpec]:
        return [
            WEATHER if name == "get_weather" else ToolSpec(name, name, {"type": "object"})
            for name in self.tools
        ]

    def names(self) -> list[str]:
        return list(self.tools)

    def has(self, name: str) -> bool:
        return name in self.tools

    async def run(self, call: ToolCall, *, timeout_s: float, max_result_chars: int) -> ToolResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            output = await self.tools[call.name](**json.loads(call.arguments))
        except asyncio.CancelledError:
            self.cancelled.append(call.call_id)
            raise
        except Exception as err:
            return ToolResult(call.call_id, call.name, ok=False, error=str(err), kind="failed")
        ms = int((loop.time() - started) * 1000)
        return ToolResult(call.call_id, call.name, ok=True, output=output, duration_ms=ms)


async def weather(city: str, delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    return f"Sunny and 21 degrees in {city}."


def tool_settings(**changes: Any) -> Settings:
    settings = make_settings()
    return settings.model_copy(update={"tools": settings.tools.model_copy(update=changes)})


async def open_session(
    connect: ClientFactory, model: ScriptedModel, toolbox: FakeToolbox | None, **changes: Any
) -> Client:
    pipeline = fake_pipeline(llm=model)
    pipeline.tools = toolbox  # type: ignore[assignment]
    return await connect(pipeline, tool_settings(**changes))


async def ask(client: Client) -> None:
    await client.send(START)
    await client.speak(200)
    await client.send(STOP)


def is_subsequence(wanted: list[str], labels: list[str]) -> bool:
    rest = iter(labels)
    return all(any(label == want for label in rest) for want in wanted)


def of_kind(items: list[Received], kind: str) -> list[Any]:
    return [item.event for item in items if item.kind == kind]


async def test_a_server_tool_turn_goes_through_acting_and_speaks_before_and_after(
    connect: ClientFactory,
) -> None:
    model = ScriptedModel(
        Answer("Let me look that up.", [("get_weather", '{"city": "Paris"}')]),
        Answer("It is sunny in Paris."),
    )
    toolbox = FakeToolbox(get_weather=lambda city: weather(city, 0.2))
    client = await open_session(connect, model, toolbox)
    await ask(client)
    seen = await client.until("turn.metrics")
    labels = kinds(seen)
    # The sentence before the call is spoken while the tool runs (its audio may start before
    # or after the machine turns to acting), then the answer after the result.
    order = [
        "state:thinking",
        "response.delta",
        "state:acting",
        "tool.call",
        "tool.result",
        "state:thinking",
        "response.delta",
        "state:speaking",
        "audio",
        "audio.done",
        "response.done",
        "state:idle",
        "turn.metrics",
    ]
    assert is_subsequence(order, labels), labels
    assert labels.index("audio.start") < labels.index("tool.result"), labels
    assert labels.count("audio.start") == 1, labels
    assert labels.count("state:thinking") == 2, labels
    (call,) = of_kind(seen, "tool.call")
    assert (call.name, json.loads(call.arguments), call.runs_on) == (
        "get_weather",
        {"city": "Paris"},
        "server",
    )
    (result,) = of_kind(seen, "tool.result")
    assert result.ok
    assert result.output == "Sunny and 21 degrees in Paris."
    assert result.duration_ms >= 150
    (done,) = of_kind(seen, "response.done")
    assert done.text == "Let me look that up. It is sunny in Paris."
    (metrics,) = of_kind(seen, "turn.metrics")
    assert [(t.name, t.runs_on, t.ok) for t in metrics.tools] == [("get_weather", "server", True)]
    # The second request carries the call and its result, as providers expect them.
    second, offered = model.requests[1]
    assert [m.role for m in second[-3:]] == ["user", "assistant", "tool"]
    assert second[-2].tool_calls[0].name == "get_weather"
    assert second[-2].content == "Let me look that up."
    assert second[-1].tool_call_id == second[-2].tool_calls[0].call_id
    assert second[-1].content == "Sunny and 21 degrees in Paris."
    assert [spec.name for spec in offered] == ["get_weather"]
    # The next turn's history keeps the call, its result and what was said.
    await ask(client)
    await client.until("turn.metrics")
    third, _ = model.requests[2]
    assert [m.role for m in third[1:]] == ["user", "assistant", "tool", "assistant", "user"]
    assert third[4].content == "Let me look that up. It is sunny in Paris."


async def test_a_client_tool_is_called_over_the_session_and_its_answer_used(
    connect: ClientFactory,
) -> None:
    model = ScriptedModel(
        Answer("", [("open_door", '{"room": "kitchen"}')]), Answer("The kitchen door is open.")
    )
    client = await open_session(connect, model, None)
    door = ClientTool(
        name="open_door",
        description="Open a door.",
        parameters={"type": "object", "properties": {"room": {"type": "string"}}},
    )
    await client.send(SessionUpdate(type="session.update", session=SessionConfig(tools=[door])))
    await client.until("session.updated")
    await ask(client)
    seen = await client.until("tool.call")
    call = seen[-1].event
    assert call.runs_on == "client"
    assert call.name == "open_door"
    # An answer to a call that was never made is refused, and changes nothing.
    await client.send(ToolResultCommand(type="tool.result", call_id="call_nope", output="x"))
    (error,) = of_kind(await client.until("error"), "error")
    assert error.code == "invalid-message"
    assert "call_nope" in error.message
    await client.send(
        ToolResultCommand(type="tool.result", call_id=call.call_id, output={"open": True})
    )
    seen = await client.until("turn.metrics")
    (result,) = of_kind(seen, "tool.result")
    assert result.ok
    assert json.loads(result.output) == {"open": True}
    assert of_kind(seen, "response.done")[0].text == "The kitchen door is open."
    assert model.requests[1][0][-1].content == '{"open": true}'
    # A second answer to the same call is refused too.
    await client.send(ToolResultCommand(type="tool.result", call_id=call.call_id, output="x"))
    assert of_kind(await client.until("error"), "error")[0].code == "invalid-message"


async def test_a_client_that_does_not_answer_times_out_and_the_agent_answers_anyway(
    connect: ClientFactory,
) -> None:
    model = ScriptedModel(Answer("", [("open_door", "{}")]), Answer("I could not open it."))
    client = await open_session(connect, model, None, client_timeout_s=0.2, filler_after_ms=0)
    door = ClientTool(name="open_door")
    await client.send(SessionUpdate(type="session.update", session=SessionConfig(tools=[door])))
    await ask(client)
    seen = await client.until("turn.metrics")
    assert "tool.cancelled" in kinds(seen)
    (result,) = of_kind(seen, "tool.result")
    assert not result.ok
    assert "did not answer" in (result.error or "")
    assert of_kind(seen, "response.done")[0].text == "I could not open it."
    assert model.requests[1][0][-1].content.startswith("Error: The client did not answer")


async def test_a_client_cannot_declare_a_tool_the_server_has(connect: ClientFactory) -> None:
    model = ScriptedModel(Answer("Hello."))
    client = await open_session(connect, model, FakeToolbox(get_weather=weather))
    clash = ClientTool(name="get_weather")
    await client.send(SessionUpdate(type="session.update", session=SessionConfig(tools=[clash])))
    (error,) = of_kind(await client.until("error"), "error")
    assert error.code == "invalid-message"
    assert "get_weather" in error.message
    await ask(client)
    await client.until("turn.metrics")
    assert [spec.name for spec in model.requests[0][1]] == ["get_weather"]


async def test_a_slow_tool_gets_one_filler_and_a_quick_one_none(connect: ClientFactory) -> None:
    model = ScriptedModel(
        Answer("", [("get_weather", '{"city": "Oslo", "delay": 0.5}')]),
        Answer("It is sunny in Oslo."),
        Answer("", [("get_weather", '{"city": "Rome", "delay": 0.02}')]),
        Answer("It is sunny in Rome."),
    )
    client = await open_session(
        connect, model, FakeToolbox(get_weather=weather), filler_after_ms=150, fillers=["Hmm."]
    )
    await ask(client)
    slow = await client.until("turn.metrics")
    labels = kinds(slow)
    acting = labels.index("state:acting")
    # The filler's audio comes while the tool runs, before its result; then the answer's.
    assert labels[acting:] == [
        "state:acting",
        "tool.call",
        "audio.start",
        "audio",
        "tool.result",
        "state:thinking",
        "response.delta",
        "state:speaking",
        "audio",
        "audio.done",
        "response.done",
        "state:idle",
        "turn.metrics",
    ], labels
    # The filler is not the model's text: the reply and the history do not have it.
    assert of_kind(slow, "response.done")[0].text == "It is sunny in Oslo."
    await ask(client)
    quick = await client.until("turn.metrics")
    labels = kinds(quick)
    assert labels.index("audio.start") > labels.index("tool.result"), labels
    history = model.requests[2][0]
    assert history[4].content == "It is sunny in Oslo."


async def test_a_barge_in_while_acting_cancels_the_tool_and_nothing_more_is_said(
    connect: ClientFactory,
) -> None:
    model = ScriptedModel(
        Answer("", [("get_weather", '{"city": "Paris", "delay": 5}')]), Answer("Too late.")
    )
    toolbox = FakeToolbox(get_weather=weather)
    client = await open_session(connect, model, toolbox, filler_after_ms=0)
    await ask(client)
    await client.until("tool.call")
    loop = asyncio.get_running_loop()
    barged = loop.time()
    await client.send(InputAudioStart(type="input_audio.start"))
    seen = await client.until("state", state="recording")
    assert loop.time() - barged < 0.1
    assert toolbox.cancelled == ["call_1_0"]
    assert "tool.result" not in kinds(seen)
    await client.send(STOP)  # no audio in this turn: it fails, nothing of the last one leaks
    after = await client.quiet(0.3)
    assert "audio" not in kinds(after)
    assert "response.delta" not in kinds(after)
    assert len(model.requests) == 1


async def test_a_cancel_while_a_client_tool_runs_tells_the_client(connect: ClientFactory) -> None:
    model = ScriptedModel(Answer("", [("open_door", "{}")]), Answer("Done."))
    client = await open_session(connect, model, None, filler_after_ms=0)
    door = ClientTool(name="open_door")
    await client.send(SessionUpdate(type="session.update", session=SessionConfig(tools=[door])))
    await ask(client)
    call = (await client.until("tool.call"))[-1].event
    await client.send(ResponseCancel(type="response.cancel"))
    seen = await client.until("state", state="idle")
    assert [e.call_id for e in of_kind(seen, "tool.cancelled")] == [call.call_id]
    await client.send(ToolResultCommand(type="tool.result", call_id=call.call_id, output="late"))
    assert of_kind(await client.until("error"), "error")[0].code == "invalid-message"


async def test_tool_failures_give_an_error_result_and_a_spoken_answer(
    connect: ClientFactory,
) -> None:
    async def broken(**_: Any) -> str:
        raise RuntimeError("the sensor is offline")

    model = ScriptedModel(
        Answer("", [("read_sensor", "{}"), ("no_such_tool", "{}")]),
        Answer("Sorry, the sensor is offline."),
    )
    client = await open_session(connect, model, FakeToolbox(read_sensor=broken))
    await ask(client)
    seen = await client.until("turn.metrics")
    results = {event.name: event for event in of_kind(seen, "tool.result")}
    assert not results["read_sensor"].ok
    assert "offline" in (results["read_sensor"].error or "")
    assert not results["no_such_tool"].ok
    assert "no tool named 'no_such_tool'" in (results["no_such_tool"].error or "")
    assert [c.runs_on for c in of_kind(seen, "tool.call")] == ["server", "server"]
    assert of_kind(seen, "response.done")[0].text == "Sorry, the sensor is offline."
    tool_messages = [m for m in model.requests[1][0] if m.role == "tool"]
    assert len(tool_messages) == 2
    assert all(m.content.startswith("Error:") for m in tool_messages)


async def test_a_model_that_keeps_calling_tools_stops_after_max_rounds(
    connect: ClientFactory,
) -> None:
    model = ScriptedModel(Answer("", [("get_weather", '{"city": "Paris"}')]))
    client = await open_session(connect, model, FakeToolbox(get_weather=weather), max_rounds=2)
    await ask(client)
    seen = await client.until("turn.metrics")
    assert len(of_kind(seen, "tool.call")) == 2
    assert len(model.requests) == 3
    assert of_kind(seen, "response.done")[0].text == "Sorry, I could not finish that."
    assert kinds(seen).count("state:acting") == 2


async def test_a_barge_in_after_the_tools_keeps_their_results_and_what_was_heard(
    connect: ClientFactory,
) -> None:
    long_answer = " ".join(["It is sunny in Paris today, with a light wind."] * 8)
    model = ScriptedModel(
        Answer("", [("get_weather", '{"city": "Paris"}')]), Answer(long_answer), Answer("Bye.")
    )
    client = await open_session(connect, model, FakeToolbox(get_weather=weather))
    await ask(client)
    await client.until("state", state="speaking")
    await client.until("audio")
    await client.send(InputAudioStart(type="input_audio.start", played_ms=200))
    seen = await client.until("state", state="recording")
    (done,) = of_kind(seen, "response.done")
    assert done.interrupted
    await client.speak(200)
    await client.send(STOP)
    await client.until("turn.metrics")
    history = model.requests[2][0]
    roles = [m.role for m in history[1:]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"], roles
    assert history[2].tool_calls[0].name == "get_weather"
    assert history[3].content == "Sunny and 21 degrees in Paris."
    heard = history[4].content
    assert heard.startswith("It is"), heard
    assert len(heard) < len(long_answer) / 2, heard
