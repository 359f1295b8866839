"""The fake Realtime conversation server, driven by a plain websockets client (no SDK between)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from voice_fsm.testing.fake_openai import speech_pcm
from voice_fsm.testing.fake_realtime_conversation import (
    REPLY,
    ConversationLatency,
    FakeConversationConfig,
    FakeToolCall,
    arguments_json,
    running_fake_conversation,
)

from support.realtime_sdk import sdk_problems

KEY = "sk-fake-conversation-0123456789"
TRANSCRIPT = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
MANUAL = {
    "type": "realtime",
    "instructions": "Be brief.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-live-transcribe"},
            "turn_detection": None,
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeConversationConfig, str]]:
    config = FakeConversationConfig()
    with running_fake_conversation(config) as base_url:
        yield config, base_url.replace("http://", "ws://") + "/realtime"


@pytest.fixture
def config(server: tuple[FakeConversationConfig, str]) -> Iterator[FakeConversationConfig]:
    """The fake, reset; afterwards every event it sent is checked against the SDK's models."""
    config = server[0]
    config.reset(api_key=KEY, transcript=TRANSCRIPT, transcription_delay=0.0)
    yield config
    sent = config.sent()
    assert sent
    assert {e["type"]: p for e in sent if (p := sdk_problems(e))} == {}


@asynccontextmanager
async def session(
    server: tuple[FakeConversationConfig, str], update: dict[str, Any] | None = MANUAL
) -> AsyncIterator[ClientConnection]:
    url = f"{server[1]}?model=gpt-realtime-2.1-mini"
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await receive(ws, "session.created")
        if update is not None:
            await send(ws, "session.update", session=update)
            await receive(ws, "session.updated")
        yield ws


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


async def receive(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next event of type `kind`; the others are skipped."""
    async with asyncio.timeout(3):
        while (event := json.loads(await ws.recv()))["type"] != kind:
            pass
    return dict(event)


async def until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    """Every event up to and including the next of type `kind`."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(3):
        while not events or events[-1]["type"] != kind:
            events.append(json.loads(await ws.recv()))
    return events


def tone(ms: int, amplitude: float = 0.2) -> str:
    t = np.arange(24 * ms) / 24_000
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    return base64.b64encode(pcm).decode()


def audio_of(events: list[dict[str, Any]]) -> bytes:
    deltas = [e["delta"] for e in events if e["type"] == "response.output_audio.delta"]
    return b"".join(base64.b64decode(delta) for delta in deltas)


def types(events: list[dict[str, Any]]) -> list[str]:
    """The event types in order, each run of deltas as one."""
    out: list[str] = []
    for event in events:
        if not (out and out[-1] == event["type"] and event["type"].endswith(".delta")):
            out.append(event["type"])
    return out


async def spoken_turn(ws: ClientConnection) -> list[dict[str, Any]]:
    await send(ws, "input_audio_buffer.append", audio=tone(600))
    await send(ws, "input_audio_buffer.commit")
    await send(ws, "response.create")
    return await until(ws, "response.done")


async def test_a_spoken_turn(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    async with session(server) as ws:
        events = await spoken_turn(ws)
    (transcribed,) = [e for e in events if e["type"].endswith("transcription.completed")]
    (committed,) = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert transcribed["item_id"] == committed["item_id"]
    assert transcribed["transcript"] == TRANSCRIPT
    response = [e for e in events if e["type"].startswith("response.")]
    in_order = types(response)
    assert in_order[:5] + in_order[-5:] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",  # the first word with the first audio
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert set(in_order[5:-5]) == {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    }
    assert audio_of(events) == speech_pcm(REPLY)
    said = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert "".join(said) == REPLY
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["conversation_id"].startswith("conv_")
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": REPLY}]
    added = [e["item"] for e in events if e["type"] == "conversation.item.added"]
    assert [(i["type"], i.get("role")) for i in added] == [
        ("message", "user"),
        ("message", "assistant"),
    ]


async def test_no_input_transcription_unless_asked(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    update = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    async with session(server, update) as ws:
        await spoken_turn(ws)
        await spoken_turn(ws)
    assert not [e for e in config.sent() if "input_audio_transcription" in e["type"]]


async def test_a_tool_call_round_trip(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.tool_call = FakeToolCall("get_weather", arguments_json(city="Paris"))
    async with session(server, {**MANUAL, "tools": [WEATHER]}) as ws:
        events = await spoken_turn(ws)
        done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert [(d["name"], json.loads(d["arguments"])) for d in done] == [
            ("get_weather", {"city": "Paris"})
        ]
        deltas = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
        assert "".join(deltas) == done[0]["arguments"]
        assert len(deltas) > 1
        assert audio_of(events) == b""
        output = {"type": "function_call_output", "call_id": done[0]["call_id"], "output": "sunny"}
        await send(ws, "conversation.item.create", item=output)
        added = await receive(ws, "conversation.item.done")
        assert added["item"]["call_id"] == done[0]["call_id"]
        await send(ws, "response.create")
        spoken = await until(ws, "response.done")
    said = "The tool said: sunny"
    assert audio_of(spoken) == speech_pcm(said)
    assert spoken[-1]["response"]["output"][0]["content"][0]["transcript"] == said


async def test_no_tool_call_when_the_tool_is_not_offered(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.tool_call = FakeToolCall("get_weather", "{}")
    async with session(server) as ws:
        events = await spoken_turn(ws)
    assert audio_of(events) == speech_pcm(REPLY)


async def test_cancel_then_truncate_to_what_was_heard(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.reset(**{**_base(config), "latency": _paced()})
    async with session(server) as ws:
        await send(ws, "input_audio_buffer.append", audio=tone(600))
        await send(ws, "input_audio_buffer.commit")
        await send(ws, "response.create")
        first = await receive(ws, "response.output_audio.delta")
        await send(ws, "response.cancel")
        events = await until(ws, "response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        await send(ws, "conversation.item.truncate", item_id=first["item_id"], content_index=0,
                   audio_end_ms=50)  # fmt: skip
        truncated = await receive(ws, "conversation.item.truncated")
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (first["item_id"], 50)
    sent = [e["type"] for e in config.sent()]
    last_audio = len(sent) - 1 - sent[::-1].index("response.output_audio.delta")
    assert last_audio < sent.index("response.done")  # no audio after the cancel
    (cut,) = config.truncations
    assert (cut.item_id, cut.content_index, cut.audio_end_ms) == (first["item_id"], 0, 50)
    assert cut.audio_ms >= 100


async def test_truncate_past_the_audio_is_refused_then_clamped(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    async with session(server) as ws:
        events = await spoken_turn(ws)
        item = events[-1]["response"]["output"][0]["id"]
        length = len(speech_pcm(REPLY)) * 1000 // 48_000
        await send(ws, "conversation.item.truncate", item_id=item, content_index=0,
                   audio_end_ms=length + 500, event_id="cut")  # fmt: skip
        error = (await receive(ws, "error"))["error"]
        truncated = await receive(ws, "conversation.item.truncated")
    assert (
        error["message"] == f"Audio content of {length}ms is already shorter than {length + 500}ms"
    )
    assert error["event_id"] is None
    assert truncated["audio_end_ms"] == length == config.truncations[0].audio_end_ms


async def test_bad_input_is_answered_with_error_events(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    async with session(server) as ws:
        events = await spoken_turn(ws)
        (user_item,) = [e["item_id"] for e in events if e["type"].endswith("buffer.committed")]
        asks = [
            ("conversation.item.truncate", {"item_id": "item_nope", "content_index": 0,
                                            "audio_end_ms": 0}),
            ("conversation.item.truncate", {"item_id": user_item, "content_index": 0,
                                            "audio_end_ms": 0}),
            ("conversation.item.create", {"item": {"type": "function_call_output",
                                                   "call_id": "call_nope", "output": "x"}}),
            ("conversation.item.create", {"item": {"type": "reasoning"}}),
            ("session.update", {"session": {"type": "realtime", "tools": [{"type": "mcp"}]}}),
            ("response.cancel", {}),
            ("conversation.item.delete", {"item_id": user_item}),
        ]  # fmt: skip
        errors = []
        for index, (kind, fields) in enumerate(asks):
            await send(ws, kind, event_id=f"ask{index}", **fields)
            errors.append((await receive(ws, "error"))["error"])
        await send(ws, "response.create", event_id="first")
        await send(ws, "response.create", event_id="second")
        busy = (await receive(ws, "error"))["error"]
        await receive(ws, "response.done")  # the session still works
    assert [e["event_id"] for e in errors] == [f"ask{i}" for i in range(len(asks))]
    assert [e["param"] for e in errors] == [
        "item_id", "item_id", "item.call_id", "item.type", "session.tools", None, "type",
    ]  # fmt: skip
    assert errors[1]["message"] == "Only model output audio messages can be truncated"
    assert errors[5]["code"] == "response_cancel_not_active"
    assert (busy["code"], busy["event_id"]) == (
        "conversation_already_has_active_response",
        "second",
    )


async def test_a_dropped_connection_mid_response(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.drop_after_chunks = 3
    async with session(server) as ws:
        await send(ws, "input_audio_buffer.append", audio=tone(600))
        await send(ws, "input_audio_buffer.commit")
        await send(ws, "response.create")
        with pytest.raises(ConnectionClosedError) as closed:
            await until(ws, "response.done")
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert len(config.sent("response.output_audio.delta")) == 3


async def test_a_server_error_mid_response(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.server_error_after_chunks = 2
    async with session(server) as ws:
        events = await spoken_turn(ws)
        again = await spoken_turn(ws)  # the next turn fails the same way: the session works
    (error,) = [e["error"] for e in events if e["type"] == "error"]
    assert (error["type"], error["code"], error["event_id"]) == ("server_error", None, None)
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"] == {"type": "server_error", "code": None}
    assert len(audio_of(events)) == 2 * config.latency.chunk_bytes
    assert again[-1]["response"]["status"] == "failed"


async def test_server_vad_answers_and_is_interrupted(
    server: tuple[FakeConversationConfig, str], config: FakeConversationConfig
) -> None:
    config.reset(**{**_base(config), "latency": _paced()})
    vad = {"type": "server_vad", "silence_duration_ms": 200}
    update = {**MANUAL, "audio": {"input": {"turn_detection": vad}}}
    async with session(server, update) as ws:
        await send(ws, "input_audio_buffer.append", audio=tone(400) + tone(300, 0.0))
        await receive(ws, "input_audio_buffer.committed")
        created = await receive(ws, "response.created")
        await receive(ws, "response.output_audio.delta")
        await send(ws, "input_audio_buffer.append", audio=tone(100))
        await receive(ws, "input_audio_buffer.speech_started")
        done = (await receive(ws, "response.done"))["response"]
    assert done["id"] == created["response"]["id"]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "turn_detected")


def _base(config: FakeConversationConfig) -> dict[str, Any]:
    return {"api_key": config.api_key, "transcript": config.transcript, "transcription_delay": 0.0}


def _paced() -> ConversationLatency:
    return ConversationLatency(first_audio_s=0.0, realtime_factor=1.0)
