"""What the Agents SDK (`openai-agents` 0.20.0, `RealtimeAgent`) sends `/v1/realtime`, replayed
with the stock `openai` SDK against a real server: its whole `session.update` (with the default
`semantic_vad` and `interrupt_response`), then, once `session.created` is in, a partial one of
`type`, `model` and `tracing` that must not reset the instructions or tools; a user text message
answered by a function call whose output comes back; `conversation.item.retrieve` of the last
assistant audio item after each transcription; on a barge-in, `conversation.item.truncate` of
the audio it played. Every server event is validated against the SDK's types (`Realtime`)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from test_realtime_endpoint import (
    MODEL,
    Realtime,
    asked,
    commit_a_turn,
    kinds,
    sdk_client,
    serving,
)
from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.audio import duration_ms
from voice_fsm.providers import Pipeline
from voice_fsm.testing import FakeOpenAIConfig
from voice_fsm.testing.fake_tool_calls import calling

from session_harness import make_settings
from support.local import require_local_engines

pytestmark = pytest.mark.integration

INSTRUCTIONS = "Answer in one short sentence."
WEATHER = {
    "description": "Get the weather in a city.",
    "name": "get_weather",
    "parameters": {
        "properties": {"city": {"title": "City", "type": "string"}},
        "required": ["city"],
        "title": "get_weather_args",
        "type": "object",
        "additionalProperties": False,
    },
    "type": "function",
}
PCM = {"rate": 24000, "type": "audio/pcm"}
AGENTS_SESSION = {
    "type": "realtime",
    "audio": {
        "input": {
            "format": PCM,
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
        },
        "output": {"format": PCM, "voice": "ash"},
    },
    "instructions": INSTRUCTIONS,
    "model": MODEL,
    "output_modalities": ["audio"],
    "tools": [WEATHER],
}
"""The Agents SDK's first `session.update` for a `RealtimeAgent` with one function tool and
default settings, as 0.20.0 serializes it."""
TRACING = {"type": "realtime", "model": MODEL, "tracing": "auto"}
"""Its second, sent when `session.created` arrives."""


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def audio_items(events: list[dict[str, Any]]) -> list[str]:
    """The assistant items audio deltas came for, in order (the SDK's "last audio item")."""
    seen = [e["item_id"] for e in of(events, "response.output_audio.delta")]
    return list(dict.fromkeys(seen))


@pytest.fixture
async def rt(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: Callable[[str], Any]
) -> AsyncIterator[Realtime]:
    """A server with no turn detection, its model OpenAI's adapter on the fake OpenAI."""
    pipeline = Pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=make_openai_llm(fake_openai[1]),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002),
    )
    async with (
        serving(make_settings(), pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


async def test_a_text_message_and_a_function_call_as_the_agents_sdk_sends_them(
    rt: Realtime, fake_openai: tuple[FakeOpenAIConfig, str]
) -> None:
    fake = fake_openai[0]
    fake.chat_script = calling(("get_weather", {"city": "Paris"}))
    # It does not wait for session.created before its update.
    await rt.send({"type": "session.update", "session": AGENTS_SESSION})
    first = await rt.until("session.updated")
    assert kinds(first)[0] == "session.created"
    # No detector here: turn detection stays off and says why; the rest is applied.
    (error,) = of(first, "error")
    assert error["error"]["code"] == "turn_detection_unavailable"
    session = first[-1]["session"]
    assert session["instructions"] == INSTRUCTIONS
    assert session["tools"] == [WEATHER]
    assert session["audio"]["input"]["turn_detection"] is None

    text = {"type": "input_text", "text": "What is the weather in Paris?"}
    message = {"type": "message", "role": "user", "content": [text]}
    await rt.send({"type": "conversation.item.create", "item": message})
    added = await rt.until("conversation.item.done")
    assert kinds(added) == ["conversation.item.added", "conversation.item.done"]
    await rt.send({"type": "response.create", "event_id": "agents_py_response_create_1"})
    # Its tracing update comes while the response runs: merged, not a reset.
    await rt.send({"type": "session.update", "session": TRACING})
    events = await rt.until("response.done")
    if "session.updated" not in kinds(events):
        events += await rt.until("session.updated")
    merged = of(events, "session.updated")[-1]["session"]
    assert merged["instructions"] == INSTRUCTIONS
    assert merged["tools"] == [WEATHER]
    assert merged["model"] == MODEL
    assert "tracing" not in merged  # accepted and ignored: not echoed as if applied
    assert "error" not in kinds(events)

    created = of(events, "response.created")[0]["response"]["id"]
    done = of(events, "response.done")[0]["response"]
    assert done["id"] == created
    # The SDK runs the tool on the item that is completed: once, on .done.
    (added_item,) = [e["item"] for e in of(events, "response.output_item.added")]
    (done_item,) = [e["item"] for e in of(events, "response.output_item.done")]
    assert (added_item["type"], added_item["status"]) == ("function_call", "in_progress")
    assert (done_item["type"], done_item["status"]) == ("function_call", "completed")
    assert json.loads(done_item["arguments"]) == {"city": "Paris"}

    output = {"call_id": done_item["call_id"], "output": "It is sunny in Paris."}
    await rt.send(
        {"type": "conversation.item.create", "item": {**output, "type": "function_call_output"}}
    )
    assert kinds(await rt.until("conversation.item.done"))[-2:] == [
        "conversation.item.added",
        "conversation.item.done",
    ]
    await rt.send({"type": "response.create", "event_id": "agents_py_response_create_2"})
    answer = await rt.until("response.done")
    assert answer[-1]["response"]["status"] == "completed"
    transcript = "".join(e["delta"] for e in of(answer, "response.output_audio_transcript.delta"))
    assert transcript == "Here is what I found: It is sunny in Paris."
    assert of(answer, "response.output_audio.delta")
    # Content parts of type "audio", the only kinds the SDK's types allow there.
    assert {e["part"]["type"] for e in of(answer, "response.content_part.added")} == {"audio"}

    # Both model requests had the agent's instructions and tool.
    bodies = [r.json for r in fake.received("chat") if r.json is not None]
    assert len(bodies) == 2
    for body in bodies:
        assert body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
        assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather"]


async def test_after_each_transcription_the_last_audio_item_can_be_retrieved(
    rt: Realtime,
) -> None:
    await rt.send({"type": "session.update", "session": {**AGENTS_SESSION, "tools": []}})
    await rt.until("session.updated")
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    reply = await rt.until("response.done")
    (item_id,) = audio_items(reply)
    spoken = reply[-1]["response"]["output"][0]["content"][0]["transcript"]

    heard = await commit_a_turn(rt)  # the second turn's transcription: the SDK retrieves
    assert heard[-1]["type"] == "conversation.item.input_audio_transcription.completed"
    await rt.send({"type": "conversation.item.retrieve", "item_id": item_id})
    (retrieved,) = of(await rt.until("conversation.item.retrieved"), "conversation.item.retrieved")
    item = retrieved["item"]
    assert (item["id"], item["role"], item["status"]) == (item_id, "assistant", "completed")
    assert item["content"] == [{"type": "output_audio", "transcript": spoken}]


LONG_REPLY = (
    "Paris is the capital of France, a city on the Seine known for its museums, its cafes "
    "and its long history, and it is also the largest city of the country."
)


async def slow_speaker(llm: FakeLanguageModel, *, vad: bool) -> AsyncIterator[Realtime]:
    """A server with fake engines, whose reply is spoken in real time (about 6 s), long
    enough to be talked over; with `vad`, the embedded Silero detector."""
    settings = make_settings()
    detector = None
    if vad:
        require_local_engines()
        from voice_fsm.adapters.local.builders import vad_factory

        detector = vad_factory(settings)
    pipeline = Pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=llm,
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.1),
        vad=detector,
    )
    async with (
        serving(settings, pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


@pytest.fixture
def long_llm() -> FakeLanguageModel:
    return FakeLanguageModel(LONG_REPLY, first_token_delay=0.01, token_delay=0.002)


@pytest.fixture
async def vad_rt(long_llm: FakeLanguageModel) -> AsyncIterator[Realtime]:
    async for rt in slow_speaker(long_llm, vad=True):
        yield rt


@pytest.fixture
async def slow_rt(long_llm: FakeLanguageModel) -> AsyncIterator[Realtime]:
    async for rt in slow_speaker(long_llm, vad=False):
        yield rt


async def test_interrupt_truncates_the_reply_in_flight_then_cancels_it(
    slow_rt: Realtime, long_llm: FakeLanguageModel
) -> None:
    """`session.interrupt()` with turn detection off: the SDK truncates the item it is
    playing, then sends `response.cancel`; the truncate waits for the response to end."""
    rt = slow_rt
    await rt.send({"type": "session.update", "session": {**AGENTS_SESSION, "tools": []}})
    await rt.until("session.updated")
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    first = await rt.until("response.output_audio.delta")
    item_id = first[-1]["item_id"]
    truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
    await rt.send({**truncate, "audio_end_ms": 100})
    await rt.send({"type": "response.cancel"})
    events = await rt.until("conversation.item.truncated")
    assert "error" not in kinds(events), of(events, "error")
    (done,) = [e["response"] for e in of(events, "response.done")]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "client_cancelled")
    assert (events[-1]["item_id"], events[-1]["audio_end_ms"]) == (item_id, 100)

    await rt.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await rt.until("conversation.item.retrieved"))[-1]["item"]
    heard = retrieved["content"][0]["transcript"]
    assert heard
    assert len(heard) < len(LONG_REPLY) // 4  # 100 ms of about 6 s
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    await rt.until("response.done")
    assert ("assistant", heard) in asked(long_llm)[-1]  # what the model sees next


async def stream(rt: Realtime, pcm: bytes) -> None:
    for offset in range(0, len(pcm), 4800):
        await rt.append(pcm[offset : offset + 4800])
        await asyncio.sleep(0.01)


async def test_semantic_vad_is_applied_as_server_vad_that_interrupts(vad_rt: Realtime) -> None:
    rt = vad_rt
    asked = {"type": "semantic_vad", "interrupt_response": False, "create_response": True}
    session = {"type": "realtime", "audio": {"input": {"turn_detection": asked}}}
    await rt.send({"type": "session.update", "session": session})
    updated = (await rt.until("session.updated"))[-1]["session"]
    # Speech over a reply always cancels it here: said so, not what was asked.
    assert updated["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "create_response": True,
        "interrupt_response": True,
    }


async def test_a_barge_in_as_the_agents_sdk_handles_it(vad_rt: Realtime) -> None:
    from voice_fsm.testing.speech import silence, spoken

    rt = vad_rt
    await rt.send({"type": "session.update", "session": {**AGENTS_SESSION, "tools": []}})
    updated = (await rt.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["turn_detection"]["interrupt_response"] is True

    await stream(rt, spoken("What is the capital of France?", lead_s=0.3) + silence(1.0))
    first = await rt.until("response.output_audio.delta")
    response_id = first[-1]["response_id"]
    item_id = first[-1]["item_id"]

    # The user talks over the reply: the server cancels it (interrupt_response), and the SDK
    # truncates the item to the audio it got, then retrieves it after the next transcription.
    talking = asyncio.create_task(stream(rt, spoken("Tell me more.", lead_s=0.2) + silence(1.0)))
    during = await rt.until("input_audio_buffer.speech_started")
    got = b"".join(
        base64.b64decode(e["delta"])
        for e in first + during
        if e["type"] == "response.output_audio.delta"
    )
    await rt.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": duration_ms(len(got)),
        }
    )
    after = await rt.until("conversation.item.input_audio_transcription.completed")
    await talking
    events = first + during + after
    assert "error" not in kinds(events), of(events, "error")
    (truncated,) = of(events, "conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, duration_ms(len(got)))
    cancelled = [e["response"] for e in of(events, "response.done")]
    assert [(r["id"], r["status"]) for r in cancelled] == [(response_id, "cancelled")]
    assert cancelled[0]["status_details"]["reason"] == "turn_detected"

    await rt.send({"type": "conversation.item.retrieve", "item_id": item_id})
    rest = await rt.until("response.done")
    (retrieved,) = of(rest, "conversation.item.retrieved")
    heard = retrieved["item"]["content"][0]["transcript"]
    assert heard
    assert LONG_REPLY.startswith(heard.rstrip(".…- "))  # what was heard, not the whole reply
    assert len(heard) < len(LONG_REPLY)
    assert rest[-1]["response"]["status"] == "completed"
