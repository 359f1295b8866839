"""Speech-to-speech mode through a real voice-fsm server and a protocol v1 client, against the
fake Realtime conversation server run as a real server: a turn, a barge-in truncated upstream
at what was heard, a tool call, a provider failure, and the mode refused where it cannot run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from voice_fsm.adapters.fake import FakeLiveSpeechToText
from voice_fsm.app import create_app
from voice_fsm.audio import bytes_for_ms
from voice_fsm.providers import ConfigError, Pipeline, build_pipeline
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_openai import speech_pcm
from voice_fsm.testing.fake_realtime_conversation import (
    ConversationLatency,
    FakeConversationConfig,
    FakeToolCall,
    arguments_json,
    running_fake_conversation,
)

from support.in_process import serving_app
from support.servers import eventually

pytestmark = pytest.mark.integration

KEY = "sk-proj-speech0123456789abcdef"
QUESTION = "What is the capital of France?"
REPLY = "The capital of France is Paris, a city on the Seine with many old bridges."
TIMEOUT = 10.0
REAL_TIME = ConversationLatency(first_audio_s=0.05, realtime_factor=1.0)  # 100 ms a chunk


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeConversationConfig, str]]:
    config = FakeConversationConfig()
    with running_fake_conversation(config) as base_url:
        yield config, base_url


@pytest.fixture
def fake(upstream: tuple[FakeConversationConfig, str]) -> FakeConversationConfig:
    upstream[0].reset(api_key=KEY, transcript=QUESTION, transcription_delay=0.0, reply=REPLY)
    return upstream[0]


def settings_for(base_url: str | None, **changes: Any) -> Settings:
    s2s: dict[str, Any] = {"provider": "off"}
    if base_url is not None:
        s2s = {"base_url": base_url, "api_key": KEY, "timeout": 3.0}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key=None,
        stt={"provider": "fake"},
        llm={"provider": "fake"},
        tts={"provider": "fake"},
        vad={"provider": "off"},
        s2s=s2s,
        **changes,
    )


@asynccontextmanager
async def serving(settings: Settings, pipeline: Pipeline | None = None) -> AsyncIterator[int]:
    """A real voice-fsm server with `pipeline`, else the one its settings build; its port."""
    app = create_app(settings, pipeline=pipeline or build_pipeline(settings))
    async with serving_app(app) as port:
        yield port


class Client:
    """A protocol v1 client: what it received, in order (audio as its byte count)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def until(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                raw = await self.ws.recv()
                item = {"type": "audio", "bytes": len(raw)} if isinstance(raw, bytes) else None
                item = item or json.loads(raw)
                out.append(item)
                self.seen.append(item)
                if item["type"] == kind and all(item.get(k) == v for k, v in fields.items()):
                    return out

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def say(self, text: str = QUESTION, played_ms: int | None = None) -> None:
        start: dict[str, Any] = {"played_ms": played_ms} if played_ms is not None else {}
        await self.send(type="input_audio.start", **start)
        pcm = speech_pcm(text)[: bytes_for_ms(1500)]
        for at in range(0, len(pcm), 4800):
            await self.ws.send(pcm[at : at + 4800])
        await self.send(type="input_audio.stop")


@asynccontextmanager
async def session(port: int, pipeline: str | None = "speech-to-speech") -> AsyncIterator[Client]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        client = Client(ws)
        created = (await client.until("session.created"))[-1]
        if pipeline is not None and created["session"]["pipeline"] != pipeline:
            await client.send(type="session.update", session={"pipeline": pipeline})
            updated = (await client.until("session.updated"))[-1]
            assert updated["session"]["pipeline"] == pipeline
        yield client


def states(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in events if e["type"] == "state"]


def audio_bytes(events: list[dict[str, Any]]) -> int:
    return sum(e["bytes"] for e in events if e["type"] == "audio")


async def test_a_turn_is_heard_and_answered_by_the_realtime_model(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        created = client.seen[0]
        assert created["pipelines"] == ["cascade", "speech-to-speech"]
        assert created["s2s"] == {"provider": "openai-realtime", "model": "gpt-realtime-2.1-mini"}
        await client.say()
        events = await client.until("turn.metrics")  # after the state idle

    assert states(client.seen) == ["recording", "thinking", "speaking", "idle"]
    kinds = [e["type"] for e in events]
    assert "transcribing" not in states(events)
    assert next(e for e in events if e["type"] == "transcript.done")["text"] == QUESTION
    assert "".join(e["text"] for e in events if e["type"] == "response.delta") == REPLY
    done = next(e for e in events if e["type"] == "response.done")
    assert done == {"type": "response.done", "turn": 1, "text": REPLY, "interrupted": False}
    sent = audio_bytes(events)
    assert sent == len(speech_pcm(REPLY))  # the model's audio, all of it, as it came
    assert next(e for e in events if e["type"] == "audio.done")["bytes"] == sent
    assert kinds.index("audio.start") < kinds.index("audio")
    metrics = events[-1]
    assert metrics["voice_to_voice_ms"] is not None
    assert metrics["llm_first_token_ms"] is not None
    assert metrics["stt_ms"] is None
    assert metrics["tts_ms"] is None
    # The server's Realtime session heard the user's audio and was asked one response.
    assert fake.connections[0].query["model"] == "gpt-realtime-2.1-mini"


async def test_no_live_transcription_is_opened_in_speech_to_speech_mode(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    # A speech-to-text provider that transcribes live would be paid for a transcript the
    # Realtime model already gives: in this mode it is left alone, and in the cascade used.
    settings = settings_for(upstream[1])
    pipeline = build_pipeline(settings)
    live = FakeLiveSpeechToText(QUESTION)
    pipeline.stt = live
    async with serving(settings, pipeline) as port, session(port) as client:
        await client.say()
        events = await client.until("turn.metrics")
        assert next(e for e in events if e["type"] == "transcript.done")["text"] == QUESTION
        assert live.live == []
        async with session(port, pipeline="cascade") as cascade:
            await cascade.say()
            await cascade.until("turn.metrics")
        assert len(live.live) == 1


async def test_the_next_turn_runs_on_the_same_upstream_conversation(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        for turn in (1, 2):
            await client.say()
            await client.until("turn.metrics", turn=turn)
    assert len(fake.connections) == 1


async def test_a_barge_in_truncates_the_reply_upstream_at_what_was_heard(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    fake.latency = REAL_TIME
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        await client.say()
        await client.until("state", state="speaking")
        await client.until("audio")
        await client.until("audio")
        await client.say("Stop, what about Spain?", played_ms=150)
        events = await client.until("state", state="recording")
        interrupted = next(e for e in events if e["type"] == "response.done")
        assert interrupted["interrupted"] is True
        await eventually(lambda: fake.truncations)
        cut = fake.truncations[0]
        assert cut.audio_end_ms == 150  # the client's played_ms: what the user heard
        assert cut.audio_ms > 150  # of more audio than that
        assert REPLY.startswith(cut.transcript)
        fake.latency = ConversationLatency(first_audio_s=0.0, realtime_factor=0.0)
        await client.until("turn.metrics", turn=2)  # the next turn is answered
    assert len(fake.connections) == 1


async def test_response_cancel_truncates_what_was_sent_at_real_time_playback(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    fake.latency = REAL_TIME
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        await client.say()
        await client.until("audio")
        # Real-time playback of the first frame has begun; a cancel within the same
        # millisecond would rightly cut at 0 ms.
        await asyncio.sleep(0.05)
        await client.send(type="response.cancel")
        await client.until("state", state="idle")
        await eventually(lambda: fake.truncations)
    cut = fake.truncations[0]
    assert 0 < cut.audio_end_ms < cut.audio_ms  # the first frame's worth, not the whole reply


async def test_a_tool_call_runs_on_the_server_and_the_model_speaks_its_result(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    fake.tool_call = FakeToolCall("calculator", arguments_json(expression="17 * 23"))
    fake.tool_reply = "It is {output}"
    settings = settings_for(upstream[1], tools={"builtins": "on"})
    async with serving(settings) as port, session(port) as client:
        await client.say()
        events = await client.until("turn.metrics")  # after the state idle
    acting = ["recording", "thinking", "acting", "thinking", "speaking", "idle"]
    assert states(client.seen) == acting
    call = next(e for e in events if e["type"] == "tool.call")
    assert (call["name"], call["runs_on"]) == ("calculator", "server")
    result = next(e for e in events if e["type"] == "tool.result")
    assert result["ok"] is True
    assert json.loads(result["output"])["result"] == 391
    reply = next(e for e in events if e["type"] == "response.done")["text"]
    assert reply.startswith("It is ")
    assert "391" in reply
    assert [t["name"] for t in events[-1]["tools"]] == ["calculator"]


async def test_a_provider_failure_is_a_typed_error_and_the_session_goes_on(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    fake.server_error_after_chunks = 1
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        await client.say()
        events = await client.until("error")
        error = events[-1]
        assert (error["code"], error["stage"], error["retryable"]) == (
            "provider-unavailable",
            "llm",
            True,
        )
        await client.until("state", state="idle")
        fake.server_error_after_chunks = None
        await client.say()
        events = await client.until("turn.metrics", turn=2)
        assert next(e for e in events if e["type"] == "response.done")["text"] == REPLY
    assert len(fake.connections) == 2  # the failed upstream session was dropped


async def test_the_mode_is_refused_where_no_realtime_model_can_run_it() -> None:
    async with serving(settings_for(None)) as port, session(port, pipeline=None) as client:
        created = client.seen[0]
        assert created["pipelines"] == ["cascade"]
        assert created["s2s"] is None
        await client.send(type="session.update", session={"pipeline": "speech-to-speech"})
        error = (await client.until("error"))[-1]
        assert (error["code"], error["stage"]) == ("invalid-message", "input")
        await client.send(type="session.update", session={"voice": "echo"})
        updated = (await client.until("session.updated"))[-1]
        assert updated["session"]["pipeline"] == "cascade"  # the refused update changed nothing
    with pytest.raises(ConfigError, match="VOICE_FSM_PIPELINE=speech-to-speech"):
        build_pipeline(settings_for(None, pipeline="speech-to-speech"))


async def test_speech_to_speech_as_the_default_and_back_to_the_cascade(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    settings = settings_for(upstream[1], pipeline="speech-to-speech")
    async with serving(settings) as port, session(port) as client:
        assert client.seen[0]["session"]["pipeline"] == "speech-to-speech"
        await client.say()
        await client.until("turn.metrics", turn=1)
        await client.send(type="session.update", session={"pipeline": "cascade"})
        await client.until("session.updated")
        await client.say()
        events = await client.until("turn.metrics", turn=2)
    assert "transcribing" in states(events)  # the cascade again
    assert len(fake.connections) == 1


async def test_the_upstream_session_opens_while_the_user_talks(
    fake: FakeConversationConfig, upstream: tuple[FakeConversationConfig, str]
) -> None:
    async with serving(settings_for(upstream[1])) as port, session(port) as client:
        assert fake.connections == []  # the switch alone opens nothing
        await client.send(type="input_audio.start")
        await client.ws.send(speech_pcm(QUESTION)[: bytes_for_ms(500)])
        await eventually(lambda: fake.connections)  # before the stop
        await client.send(type="input_audio.stop")
        events = await client.until("turn.metrics")
    assert next(e for e in events if e["type"] == "response.done")["text"] == REPLY
    assert len(fake.connections) == 1
