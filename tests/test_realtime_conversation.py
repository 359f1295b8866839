"""Speech-to-speech (`RealtimeConversation`) against the fake Realtime conversation server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

import numpy as np
import pytest

from voice_fsm import provider_requests
from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.realtime_conversation import RealtimeConversation
from voice_fsm.adapters.openai.realtime_conversation_events import (
    ConversationEvent,
    ReplyAudio,
    ReplyDone,
    ReplyTranscriptDelta,
    UserTranscript,
)
from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.testing.fake_openai import speech_pcm
from voice_fsm.testing.fake_realtime_conversation import (
    REPLY,
    ConversationLatency,
    FakeConversationConfig,
    FakeToolCall,
    arguments_json,
    running_fake_conversation,
)

from support.openai_wire import drain, openai_settings
from support.servers import eventually

KEY = "sk-proj-conversation0123456789"
TRANSCRIPT = "What is the capital of France?"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
REAL_TIME = ConversationLatency(first_audio_s=0.0, realtime_factor=1.0)  # 100 ms chunks


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeConversationConfig, str]]:
    config = FakeConversationConfig()
    with running_fake_conversation(config) as base_url:
        yield config, base_url


@pytest.fixture
def fake(server: tuple[FakeConversationConfig, str]) -> FakeConversationConfig:
    server[0].reset(api_key=KEY, transcript=TRANSCRIPT, transcription_delay=0.0)
    return server[0]


@pytest.fixture
async def s2s(
    server: tuple[FakeConversationConfig, str], fake: FakeConversationConfig
) -> AsyncIterator[Callable[..., OpenAISpeechToSpeech]]:
    made: list[OpenAISpeechToSpeech] = []

    def make(key: str = KEY, **options: Any) -> OpenAISpeechToSpeech:
        settings = openai_settings("llm", base_url=server[1], key=key)
        client = make_openai_client(settings, settings.llm)
        options.setdefault("timeout", 2.0)
        adapter = OpenAISpeechToSpeech(client, secrets=settings.secrets(), **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()


@pytest.fixture
async def conversation(
    s2s: Callable[..., OpenAISpeechToSpeech],
) -> AsyncIterator[RealtimeConversation]:
    opened = await s2s().connect(instructions="Be brief.", tools=[WEATHER])
    yield opened
    await opened.aclose()


def speech(ms: int = 600) -> bytes:
    t = np.arange(24 * ms) / 24_000
    return (0.2 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def turn(conversation: RealtimeConversation, pcm: bytes = b"") -> list[ConversationEvent]:
    if pcm:
        await conversation.append(pcm)
    return [event async for event in conversation.respond()]


def audio(events: list[ConversationEvent]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, ReplyAudio))


async def test_a_spoken_turn(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    requests = provider_requests.collect()
    events = await turn(conversation, speech())
    (user,) = [e for e in events if isinstance(e, UserTranscript)]
    assert user.text == TRANSCRIPT
    assert audio(events) == speech_pcm(REPLY)
    assert "".join(e.text for e in events if isinstance(e, ReplyTranscriptDelta)) == REPLY
    done = events[-1]
    assert isinstance(done, ReplyDone)
    assert (done.status, done.reason, done.transcript) == ("completed", None, REPLY)
    assert requests == [{"stage": "llm", "id": done.response_id}]
    assert fake.appended_audio() == speech()
    assert fake.connections[0].query == {"model": "gpt-realtime-2.1-mini"}
    update = fake.received("session.update")[0]["session"]
    assert update["instructions"] == "Be brief."
    assert update["audio"]["input"]["transcription"] == {"model": "gpt-live-transcribe"}
    assert update["audio"]["input"]["turn_detection"] is None
    assert update["audio"]["output"]["voice"] == "marin"
    assert update["tools"] == [{"type": "function", "name": "get_weather",
                                "description": WEATHER.description,
                                "parameters": WEATHER.parameters}]  # fmt: skip
    again = await turn(conversation, speech(300))  # the session goes on
    assert audio(again) == speech_pcm(REPLY)
    assert len(fake.received("input_audio_buffer.commit")) == 2


async def test_latency_against_a_paced_fake(
    s2s: Callable[..., OpenAISpeechToSpeech], fake: FakeConversationConfig
) -> None:
    """Not asserted: printed, for a look at what the adapter adds to the fake's pace."""
    fake.latency = ConversationLatency(first_audio_s=0.2, realtime_factor=4.0)
    started = time.perf_counter()
    conversation = await s2s().connect(instructions="Be brief.")
    connected = time.perf_counter()
    await conversation.append(speech())
    first: float | None = None
    async for event in conversation.respond():
        if isinstance(event, ReplyAudio) and first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    await conversation.aclose()
    assert first is not None
    audio_s = len(speech_pcm(REPLY)) / 48_000
    print(
        f"\nspeech-to-speech on the fake: connect {connected - started:.3f} s, first audio "
        f"{first - connected:.3f} s (fake 0.200), whole reply {ended - connected:.3f} s "
        f"(fake {0.2 + (audio_s - 0.1) / 4:.3f})"
    )


async def test_a_barge_in_cancels_and_truncates_to_what_was_heard(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    fake.latency = REAL_TIME
    await conversation.append(speech())
    chunks: list[ReplyAudio] = []
    async with aclosing(conversation.respond()) as events:
        async for event in events:
            if isinstance(event, ReplyAudio):
                chunks.append(event)
                if len(chunks) == 3:
                    break  # the user talks over the reply
    item = chunks[0].item_id
    await eventually(lambda: fake.sent("response.done"))
    assert fake.sent("response.done")[0]["response"]["status"] == "cancelled"
    assert await conversation.truncate(item, 250) == 250
    await eventually(lambda: fake.truncations)
    (cut,) = fake.truncations
    assert (cut.item_id, cut.content_index, cut.audio_end_ms) == (item, 0, 250)
    assert cut.transcript  # what the model wrote for the item before the cut
    fake.latency = ConversationLatency(first_audio_s=0.0, realtime_factor=0.0)
    events_after = await turn(conversation, speech())
    assert audio(events_after) == speech_pcm(REPLY)  # no audio of the cancelled reply
    assert {e.item_id for e in events_after if isinstance(e, ReplyAudio)} != {item}


async def test_truncate_never_cuts_past_the_audio_that_arrived(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    events = await turn(conversation, speech())
    item = next(e.item_id for e in events if isinstance(e, ReplyAudio))
    whole_ms = len(speech_pcm(REPLY)) // 48
    assert conversation.audio_ms(item) == whole_ms
    assert await conversation.truncate(item, whole_ms + 900) == whole_ms
    await eventually(lambda: fake.truncations)
    assert fake.truncations[0].audio_end_ms == whole_ms
    assert not fake.sent("error")


async def test_cancel_ends_the_reply_as_cancelled(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    fake.latency = REAL_TIME
    await conversation.append(speech())
    events: list[ConversationEvent] = []
    async for event in conversation.respond():
        events.append(event)
        if isinstance(event, ReplyAudio) and len(audio(events)) == len(event.pcm):
            await conversation.cancel()
    done = events[-1]
    assert isinstance(done, ReplyDone)
    assert (done.status, done.reason) == ("cancelled", "client_cancelled")
    assert len(audio(events)) < len(speech_pcm(REPLY))


async def test_a_tool_call_round_trip(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    fake.tool_call = FakeToolCall("get_weather", arguments_json(city="Paris"))
    events = await turn(conversation, speech())
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert audio(events) == b""
    assert isinstance(events[-1], ReplyDone)
    await conversation.submit_tool_result(calls[0].call_id, '{"sky": "sunny"}')
    spoken = await turn(conversation)
    said = 'The tool said: {"sky": "sunny"}'
    assert audio(spoken) == speech_pcm(said)
    assert [e for e in spoken if isinstance(e, UserTranscript)] == []  # no new user audio
    assert len(fake.received("input_audio_buffer.commit")) == 1
    (output,) = fake.received("conversation.item.create")
    assert output["item"] == {
        "type": "function_call_output",
        "call_id": calls[0].call_id,
        "output": '{"sky": "sunny"}',
    }


async def test_history_is_added_to_a_new_session(
    s2s: Callable[..., OpenAISpeechToSpeech], fake: FakeConversationConfig
) -> None:
    history = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi there."),
    ]
    conversation = await s2s(voice="cedar").connect(instructions="Be brief.", history=history)
    await conversation.aclose()
    items = [event["item"] for event in fake.received("conversation.item.create")]
    assert items == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hi there."}]},
    ]  # fmt: skip
    assert fake.received("session.update")[0]["session"]["audio"]["output"]["voice"] == "cedar"


async def test_a_dropped_connection_is_a_retryable_provider_error(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    fake.drop_after_chunks = 2
    events: list[ConversationEvent] = []
    await conversation.append(speech())
    with pytest.raises(ProviderError) as failed:
        await drain(conversation.respond(), events)
    err = failed.value
    assert (err.code, err.stage, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, Stage.LLM, True)
    assert "closed the connection" in err.message
    assert len([e for e in events if isinstance(e, ReplyAudio)]) == 2
    with pytest.raises(ProviderError) as again:
        await conversation.append(speech(100))
    assert again.value.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_a_server_error_event_is_a_retryable_provider_error(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    fake.server_error_after_chunks = 1
    with pytest.raises(ProviderError) as failed:
        await turn(conversation, speech())
    err = failed.value
    assert (err.code, err.stage, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, Stage.LLM, True)
    assert err.message.startswith("OpenAI language model failed: The server had an error")
    fake.server_error_after_chunks = None
    events = await turn(conversation, speech())  # the session is still usable
    assert audio(events) == speech_pcm(REPLY)


async def test_a_refused_request_is_a_provider_error(
    conversation: RealtimeConversation, fake: FakeConversationConfig
) -> None:
    refusal = {"type": "invalid_request_error", "code": "invalid_value", "message": "No.",
               "param": None}  # fmt: skip
    fake.errors["response.create"] = refusal
    with pytest.raises(ProviderError) as failed:
        await turn(conversation, speech())
    assert (failed.value.code, failed.value.retryable) == (ErrorCode.PROVIDER_ERROR, False)
    assert failed.value.message == "OpenAI language model failed: No. (invalid_value)"


async def test_a_silent_server_is_a_timeout(
    s2s: Callable[..., OpenAISpeechToSpeech], fake: FakeConversationConfig
) -> None:
    fake.latency = ConversationLatency(first_audio_s=1.0)
    conversation = await s2s(timeout=0.3).connect(instructions="Be brief.")
    with pytest.raises(ProviderError) as failed:
        await turn(conversation, speech())
    await conversation.aclose()
    assert (failed.value.code, failed.value.retryable) == (ErrorCode.PROVIDER_TIMEOUT, True)


async def test_a_refused_key_and_a_refused_session(
    s2s: Callable[..., OpenAISpeechToSpeech], fake: FakeConversationConfig
) -> None:
    with pytest.raises(ProviderError) as refused:
        await s2s(key="sk-proj-wrong0123456789").connect(instructions="Hi.")
    assert refused.value.code == ErrorCode.PROVIDER_AUTH
    assert "wrong0123456789" not in refused.value.message
    with pytest.raises(ProviderError) as bad_voice:
        await s2s(voice="nova").connect(instructions="Hi.")
    assert bad_voice.value.code == ErrorCode.PROVIDER_ERROR
    assert "nova" in bad_voice.value.message
    await eventually(lambda: len(fake.closed) == 1)  # the refused session was closed
