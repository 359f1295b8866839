"""Tool calls end to end: a real `voice-fsm serve` on a free port, the fake OpenAI API (in this
process, so its record of requests can be checked, and its scripted model calls the tools in
OpenAI's streaming wire shape), and a WebSocket client speaking protocol v1.

The tools are Python functions (tests/support/tool_functions.py), a real MCP server over stdio
(tests/support/mcp_weather_server.py) and a tool the client declares. `pytest -s` prints the
measured figures (barge-in latency, tool durations)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from voice_fsm.testing import FakeOpenAIConfig, running_fake_openai
from voice_fsm.testing.fake_tool_calls import (
    ChatScript,
    FakeAnswer,
    InvalidRequest,
    JsonObject,
    calling,
    disobedient,
    tool_results,
)
from voice_fsm.tool_settings import DEFAULT_FILLERS

from support.live_server import Server, connect, receive, report, say, stop, until
from support.servers import clean_env, console_script, eventually, free_port, running_server
from support.tool_functions import ESSAY_CHARS, weather_text

pytestmark = pytest.mark.integration

KEY = "sk-test-tools-4242"
TESTS = Path(__file__).resolve().parent
FUNCTIONS = ",".join(
    f"support.tool_functions:{name}"
    for name in (
        "get_weather", "slow_weather", "quick_weather", "broken_weather", "weather_object",
        "weather_essay",
    )
)  # fmt: skip
MCP_SERVER = json.dumps(
    [{"command": [sys.executable, str(TESTS / "support/mcp_weather_server.py")]}]
)
Item = dict[str, Any] | bytes


@dataclass
class Stack:
    fake: FakeOpenAIConfig
    server: Server


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeOpenAIConfig, str]]:
    config = FakeOpenAIConfig(
        api_key=KEY,
        reply="Nothing to look up.",
        stt_delay=0.01,
        llm_first_token_delay=0.01,
        llm_token_delay=0.002,
        tts_first_audio_delay=0.01,
        tts_chunk_delay=0.002,
    )
    with running_fake_openai(config) as base_url:
        yield config, base_url


@contextmanager
def serve(fake: tuple[FakeOpenAIConfig, str], workdir: Path, **settings: str) -> Iterator[Stack]:
    """`voice-fsm serve` on the fake OpenAI API, with tests/ on its path for the tools."""
    config, base_url = fake
    port = free_port()
    log = workdir / f"server-{port}.log"
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = clean_env(
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=base_url,
        VOICE_FSM_LOG__FORMAT="json",
        PYTHONPATH=path,
        **{f"VOICE_FSM_TOOLS__{k}": v for k, v in settings.items()},
    )
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=log,
    ) as process:
        server = Server(process, port, log)
        yield Stack(config, server)
        # A tool's failure is logged with its traceback (tool.raised); nothing else may crash.
        for event in ("stage.crashed", "session.crashed"):
            assert not server.events(event), server.events(event)
        assert not server.events("turn.completed", outcome="internal-error")


@pytest.fixture(scope="module")
def stack(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serve(fake, tmp_path_factory.mktemp("tools"), FUNCTIONS=FUNCTIONS) as stack:
        yield stack


@pytest.fixture(scope="module")
def strict_stack(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An MCP server's tools and a slow function, which get half a second (the MCP server's
    are quick). One server for both: each start of `voice-fsm serve` costs seconds."""
    workdir = tmp_path_factory.mktemp("strict")
    slow = "support.tool_functions:slow_weather"
    with serve(fake, workdir, FUNCTIONS=slow, TIMEOUT_S="0.5", MCP_SERVERS=MCP_SERVER) as stack:
        yield stack


@pytest.fixture(autouse=True)
def fresh_fake(fake: tuple[FakeOpenAIConfig, str]) -> None:
    config, _ = fake
    config.chat_script, config.failures = None, {}
    config.requests.clear()


# ---------------------------------------------------------------------------- helpers


async def ask(ws: ClientConnection, *, end: str = "turn.metrics") -> list[Item]:
    """One push-to-talk turn; what the server sent up to `end`."""
    await say(ws)
    await stop(ws)
    return await until(ws, end)


def of(seen: list[Item], kind: str) -> list[dict[str, Any]]:
    return [item for item in seen if isinstance(item, dict) and item["type"] == kind]


def labels(seen: list[Item]) -> list[str]:
    """`audio` for a binary frame, `state:<state>` for a state event, else the type."""
    return [
        "audio"
        if isinstance(item, bytes)
        else f"state:{item['state']}"
        if item["type"] == "state"
        else item["type"]
        for item in seen
    ]


def between(seen: list[Item], first: str, last: str) -> list[str]:
    names = labels(seen)
    return names[names.index(first) + 1 : names.index(last)]


def chats(config: FakeOpenAIConfig) -> list[JsonObject]:
    return [request.json for request in config.received("chat") if request.json is not None]


def spoken(config: FakeOpenAIConfig) -> list[str]:
    return [str(r.json["input"]) for r in config.received("speech") if r.json is not None]


async def next_turn_works(ws: ClientConnection, config: FakeOpenAIConfig) -> None:
    config.chat_script = None
    seen = await ask(ws)
    assert not of(seen, "error"), seen
    assert of(seen, "response.done")[0]["text"] == config.reply


# ---------------------------------------------------------------------------- tests


async def test_a_python_tool_called_twice_in_one_round(stack: Stack) -> None:
    stack.fake.chat_script = calling(
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})
    )
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    names = labels(seen)
    assert names.index("state:acting") < names.index("tool.call"), names
    calls, results = of(seen, "tool.call"), of(seen, "tool.result")
    assert [(c["name"], json.loads(c["arguments"]), c["runs_on"]) for c in calls] == [
        ("get_weather", {"city": "Paris"}, "server"),
        ("get_weather", {"city": "Oslo"}, "server"),
    ]
    assert {r["call_id"]: (r["ok"], r["output"]) for r in results} == {
        calls[0]["call_id"]: (True, weather_text("Paris")),
        calls[1]["call_id"]: (True, weather_text("Oslo")),
    }
    report("python tool", durations_ms=[r["duration_ms"] for r in results])
    # The model's second request: its calls, then each result, in the order of the calls.
    first, second = chats(stack.fake)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assistant, *tools = second["messages"][-3:]
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [
        (c["call_id"], "get_weather") for c in calls
    ]
    assert [(m["role"], m["tool_call_id"], m["content"]) for m in tools] == [
        ("tool", calls[0]["call_id"], weather_text("Paris")),
        ("tool", calls[1]["call_id"], weather_text("Oslo")),
    ]
    answer = "Here is what I found: " + "; ".join(map(weather_text, ["Paris", "Oslo"]))
    assert of(seen, "response.done")[0]["text"] == answer
    assert " ".join(text.strip() for text in spoken(stack.fake)) == answer
    assert of(seen, "audio.done")[0]["bytes"] > 0
    assert [t["ok"] for t in of(seen, "turn.metrics")[0]["tools"]] == [True, True]
    await ws.close()


async def test_a_tool_of_an_mcp_server(strict_stack: Stack) -> None:
    stack = strict_stack
    await eventually(lambda: stack.server.events("mcp.connected"), 15)
    stack.fake.chat_script = calling(("forecast", {"city": "Paris"}))
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    (result,) = of(seen, "tool.result")
    assert (result["name"], result["ok"]) == ("forecast", True), result
    assert result["output"] == "Sunny in Paris, 21 degrees."
    report("mcp tool", duration_ms=result["duration_ms"])
    assert chats(stack.fake)[1]["messages"][-1]["content"] == "Sunny in Paris, 21 degrees."
    done = of(seen, "response.done")[0]["text"]
    assert done == "Here is what I found: Sunny in Paris, 21 degrees."
    assert of(seen, "audio.done")[0]["bytes"] > 0
    await ws.close()


async def test_a_client_tool_is_answered_by_the_client(stack: Stack) -> None:
    stack.fake.chat_script = calling(("open_door", {"room": "kitchen"}))
    ws, _ = await connect(stack.server)
    door = {
        "type": "function",
        "name": "open_door",
        "description": "Open a door of the house.",
        "parameters": {"type": "object", "properties": {"room": {"type": "string"}}},
    }
    await ws.send(json.dumps({"type": "session.update", "session": {"tools": [door]}}))
    await until(ws, "session.updated")
    await say(ws)
    await stop(ws)
    call = (await until(ws, "tool.call"))[-1]
    assert isinstance(call, dict)
    assert (call["name"], call["runs_on"]) == ("open_door", "client")
    assert json.loads(call["arguments"]) == {"room": "kitchen"}
    answer = {"type": "tool.result", "call_id": call["call_id"], "output": {"open": True}}
    await ws.send(json.dumps(answer))
    seen = await until(ws, "turn.metrics")
    (result,) = of(seen, "tool.result")
    assert result["ok"]
    assert json.loads(result["output"]) == {"open": True}
    offered = [tool["function"]["name"] for tool in chats(stack.fake)[0]["tools"]]
    assert {"open_door", "get_weather"} <= set(offered)
    last = chats(stack.fake)[1]["messages"][-1]
    assert (last["role"], last["tool_call_id"]) == ("tool", call["call_id"])
    assert json.loads(last["content"]) == {"open": True}
    assert of(seen, "response.done")[0]["text"] == 'Here is what I found: {"open": true}'
    await ws.close()


async def test_what_the_model_says_before_a_call_is_spoken_before_the_result(
    stack: Stack,
) -> None:
    stack.fake.chat_script = calling(("slow_weather", {"city": "Rome"}), text="Let me check that.")
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    names = labels(seen)
    assert names.index("audio") < names.index("tool.result"), names
    assert names.count("audio.start") == 1, names
    assert spoken(stack.fake)[0].strip() == "Let me check that."
    assert not set(spoken(stack.fake)) & set(DEFAULT_FILLERS)  # something was said: no filler
    done = of(seen, "response.done")[0]["text"]
    assert done == f"Let me check that. Here is what I found: {weather_text('Rome')}"
    await ws.close()


async def test_a_slow_tool_gets_one_filler(stack: Stack) -> None:
    stack.fake.chat_script = calling(("slow_weather", {"city": "Lima"}))
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    during = between(seen, "tool.call", "tool.result")
    assert {"audio", "audio.start"} <= set(during), during
    fillers = [text for text in spoken(stack.fake) if text.strip() in DEFAULT_FILLERS]
    assert len(fillers) == 1, spoken(stack.fake)
    (result,) = of(seen, "tool.result")
    report(
        "slow tool", duration_ms=result["duration_ms"], frames_while_acting=during.count("audio")
    )
    assert result["duration_ms"] >= 1900
    done = of(seen, "response.done")[0]["text"]
    assert done == f"Here is what I found: {weather_text('Lima')}"  # the filler is not in it
    assert labels(seen).count("audio.start") == 1
    await ws.close()


async def test_a_quick_tool_gets_no_filler(stack: Stack) -> None:
    stack.fake.chat_script = calling(("quick_weather", {"city": "Kyiv"}))
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    assert "audio" not in between(seen, "tool.call", "tool.result"), labels(seen)
    assert not set(map(str.strip, spoken(stack.fake))) & set(DEFAULT_FILLERS)
    report("quick tool", duration_ms=of(seen, "tool.result")[0]["duration_ms"])
    await ws.close()


async def test_a_barge_in_while_acting(stack: Stack) -> None:
    stack.fake.chat_script = calling(("slow_weather", {"city": "Oslo"}))
    ws, _ = await connect(stack.server)
    await say(ws)
    await stop(ws)
    call = (await until(ws, "tool.call"))[-1]
    assert isinstance(call, dict)
    sent = time.monotonic()
    await ws.send(json.dumps({"type": "input_audio.start"}))
    before = await until(ws, "state", state="recording")
    latency_ms = (time.monotonic() - sent) * 1000
    report("barge-in while acting", latency_ms=round(latency_ms, 1))
    assert latency_ms < 100
    assert of(before, "state")[-1]["previous"] == "acting"
    assert not of(before, "tool.result"), before
    # Nothing more of the interrupted turn, even past the time the tool would have taken.
    late: list[Item] = []
    deadline = time.monotonic() + 2.5
    while (left := deadline - time.monotonic()) > 0:
        try:
            late.append(await receive(ws, left))
        except TimeoutError:
            break
    old = call["turn"]
    assert not [item for item in late if isinstance(item, bytes)], labels(late)
    assert not [i for i in late if isinstance(i, dict) and i.get("turn") == old], late
    assert len(chats(stack.fake)) == 1  # the model was not asked with the cancelled call
    await ws.send(b"\x10\x00" * 7200)  # the new turn's audio, 300 ms
    await stop(ws)
    stack.fake.chat_script = None
    seen = await until(ws, "turn.metrics")
    assert of(seen, "response.done")[0]["text"] == stack.fake.reply
    await ws.close()


def failing_second_call(messages: list[JsonObject], tools: list[JsonObject]) -> FakeAnswer | None:
    if tool_results(messages):
        raise InvalidRequest("The model cannot answer tool results today.")
    return calling(("get_weather", {"city": "Bern"}))(messages, tools)


ERRORS: dict[str, tuple[ChatScript, str]] = {
    "raises": (calling(("broken_weather", {"city": "Nice"})), "the weather service for Nice"),
    "not-serialisable": (calling(("weather_object", {"city": "Nice"})), "not JSON"),
    "too-large": (calling(("weather_essay", {"city": "Nice"})), f"{ESSAY_CHARS} characters"),
    "unknown-tool": (disobedient("unknown-tool"), "launch_rockets"),
    "invalid-json": (disobedient("invalid-json"), "not JSON"),
    "wrong-type": (calling(("get_weather", {"city": 5})), "city"),
    "missing-argument": (calling(("get_weather", {})), "city"),
}


@pytest.mark.parametrize("kind", [*ERRORS, "timeout"])
async def test_a_failing_call_is_answered_anyway(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "timeout":
        stack: Stack = request.getfixturevalue("strict_stack")
        script, said = calling(("slow_weather", {"city": "Nice"})), "within 0.5 s"
    else:
        stack = request.getfixturevalue("stack")
        script, said = ERRORS[kind]
    stack.fake.chat_script = script
    ws, _ = await connect(stack.server)
    seen = await ask(ws)
    assert not of(seen, "error"), seen
    (result,) = of(seen, "tool.result")
    assert (result["ok"], result["output"]) == (False, None), result
    assert said in result["error"], result
    report(f"failing tool ({kind})", duration_ms=result["duration_ms"], error=result["error"][:80])
    assert chats(stack.fake)[1]["messages"][-1]["content"] == "Error: " + result["error"]
    done = of(seen, "response.done")[0]
    assert result["error"] in done["text"]
    assert not done["interrupted"]
    assert of(seen, "audio.done")[0]["bytes"] > 0
    (timing,) = of(seen, "turn.metrics")[0]["tools"]
    assert timing["ok"] is False, timing
    assert timing["kind"], timing
    await next_turn_works(ws, stack.fake)
    await ws.close()


async def test_a_provider_failure_after_the_tools(stack: Stack) -> None:
    stack.fake.chat_script = failing_second_call
    ws, _ = await connect(stack.server)
    seen = await ask(ws, end="error")
    assert of(seen, "tool.result")[0]["ok"] is True
    error = seen[-1]
    assert isinstance(error, dict)
    assert (error["code"], error["stage"], error["retryable"]) == ("provider-error", "llm", False)
    assert "tool results today" in error["message"]
    after = await until(ws, "state", state="idle")
    assert not {"error", "response.done"} & set(labels(after)), after
    assert len(chats(stack.fake)) == 2  # a refused request is not tried again
    await next_turn_works(ws, stack.fake)
    await ws.close()
