"""Hands-free turns: the microphone streams all the time and voice activity detection starts
and ends turns.

Two detectors. The local one: real speech (made with Piper) and the real Silero detector, fake
speech-to-text, LLM and speech. The Realtime transcription session's own VAD: the real OpenAI
adapters against the fake Realtime server (whose VAD hears loudness, so a synthetic voiced
signal is speech), fake LLM and speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from voice_fsm.adapters.fake import FakeSpeechToText, FakeTextToSpeech
from voice_fsm.adapters.local.builders import vad_factory as _vad_factory
from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import InputAudioStart, InputAudioStop, SessionConfig, SessionUpdate
from voice_fsm.providers import Pipeline, build_pipeline
from voice_fsm.settings import (
    FakeSettings,
    LimitSettings,
    LlmSettings,
    Settings,
    SttSettings,
    TtsSettings,
    VadSettings,
)
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.testing.speech import silence, spoken, voiced

from conftest import REALTIME_KEY, ClientFactory
from session_harness import Client, fake_pipeline, kinds, make_settings
from support.local import require_engine
from support.servers import eventually

HANDS_FREE = SessionUpdate(type="session.update", session=SessionConfig(mode="hands_free"))
PUSH_TO_TALK = SessionUpdate(type="session.update", session=SessionConfig(mode="push_to_talk"))
START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")
TRANSCRIPTS = ("What is the capital of France?", "And of Italy?")


@pytest.fixture(scope="module")
def question() -> bytes:
    require_engine("piper")
    return spoken("What is the capital of France?", lead_s=0.0)


def with_vad(pipeline: Pipeline) -> Pipeline:
    require_engine("onnxruntime")
    pipeline.vad = _vad_factory(make_settings())
    assert pipeline.vad is not None
    return pipeline


async def stream(client: Client, pcm: bytes, frame_ms: int = 20) -> None:
    """Send `pcm` as a microphone would, in `frame_ms` frames (faster than real time)."""
    step = bytes_for_ms(frame_ms)
    for offset in range(0, len(pcm), step):
        await client.send(pcm[offset : offset + step])
        await asyncio.sleep(0)


async def test_the_session_offers_hands_free_only_with_a_detector(
    connect: ClientFactory,
) -> None:
    plain = await connect(fake_pipeline())
    created: Any = plain.log[0].event
    assert created.modes == ["push_to_talk"]
    await plain.send(HANDS_FREE)
    assert kinds(await plain.until("error")) == ["error:invalid-message"]

    client = await connect(with_vad(fake_pipeline()))
    created = client.log[0].event
    assert created.modes == ["push_to_talk", "hands_free"]
    await client.send(HANDS_FREE)
    updated: Any = (await client.until("session.updated"))[-1].event
    assert updated.session.mode == "hands_free"


async def test_speech_with_pauses_makes_one_turn_per_utterance(
    connect: ClientFactory, question: bytes
) -> None:
    stt = FakeSpeechToText()
    client = await connect(with_vad(fake_pipeline(stt=stt)))
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, silence(0.6) + question + silence(1.0))
    first = await client.until("turn.metrics")
    assert kinds(first)[:4] == [
        "vad.speech_started",
        "state:recording",
        "vad.speech_stopped",
        "state:transcribing",
    ]
    started: Any = first[0].event
    stopped: Any = next(i.event for i in first if i.kind == "vad.speech_stopped")
    speech_ms = len(question) * 1000 // 48000
    assert abs(started.audio_ms - 600) <= 150
    assert abs(stopped.audio_ms - (600 + speech_ms)) <= 300
    # The turn's recording is the speech, from its first syllable: the detector's delay is
    # made good from the audio it kept.
    recorded_ms = stt.ledger.calls[-1][0] * 1000 // 48000  # type: ignore[index, operator]
    assert abs(recorded_ms - speech_ms) <= 700

    await stream(client, question + silence(1.0))
    second = await client.until("turn.metrics")
    assert kinds(second)[:2] == ["vad.speech_started", "state:recording"]
    assert second[-1].event.turn == 2  # type: ignore[union-attr]
    assert "error" not in kinds(first + second)


async def test_speech_while_the_reply_plays_is_a_barge_in(
    connect: ClientFactory, question: bytes
) -> None:
    tts = FakeTextToSpeech(chunk_delay=0.1)
    client = await connect(with_vad(fake_pipeline(tts=tts)))
    await client.send(HANDS_FREE)
    await client.until("session.updated")
    await stream(client, question + silence(0.8))
    await client.until("audio")  # the reply is being spoken
    await stream(client, silence(0.2) + question)
    items = await client.until("state", state="recording")
    assert "vad.speech_started" in kinds(items)
    last: Any = items[-1].event
    assert (last.previous, last.turn) == ("speaking", 2)
    assert tts.ledger.open == 0


# ---------------------------------------------------------------- the Realtime session's VAD

OpenRealtime = Callable[..., tuple[Pipeline, Settings]]
# Tests ask for open_realtime before connect: pytest then closes the sessions before the
# pipelines, as the server does.


@pytest.fixture
async def open_realtime(
    realtime_server: tuple[FakeRealtimeConfig, str], realtime: FakeRealtimeConfig
) -> AsyncIterator[OpenRealtime]:
    """Builds the pipeline from settings as the server does: OpenAI Realtime speech-to-text at
    the fake, fake LLM and speech, hands-free turns by the Realtime VAD (`vad` settings)."""
    realtime.transcripts = TRANSCRIPTS
    pipelines: list[Pipeline] = []

    def make(
        tts_chunk_delay: float = 0.0, max_audio_seconds: float = 60.0, **vad: Any
    ) -> tuple[Pipeline, Settings]:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            openai_api_key=SecretStr(REALTIME_KEY),
            openai_base_url=realtime_server[1],
            stt=SttSettings(live=True, timeout=2.0, max_retries=0),
            llm=LlmSettings(provider="fake"),
            tts=TtsSettings(provider="fake"),
            vad=VadSettings(provider="openai-realtime", **vad),
            limits=LimitSettings(max_audio_seconds=max_audio_seconds),
            fake=FakeSettings(
                llm_first_token_delay=0.01,
                llm_token_delay=0.002,
                tts_first_audio_delay=0.01,
                tts_chunk_delay=tts_chunk_delay,
            ),
        )
        pipeline = build_pipeline(settings)
        pipelines.append(pipeline)
        return pipeline, settings

    yield make
    for pipeline in pipelines:
        await pipeline.aclose()


async def hands_free(client: Client) -> None:
    await client.send(HANDS_FREE)
    updated: Any = (await client.until("session.updated"))[-1].event
    assert updated.session.mode == "hands_free"


def event(items: list[Any], kind: str) -> Any:
    return next(item.event for item in items if item.kind == kind)


async def test_realtime_vad_turns_are_transcribed_on_their_one_connection(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    client = await connect(*open_realtime())
    created: Any = client.log[0].event
    assert created.modes == ["push_to_talk", "hands_free"]
    await hands_free(client)

    sent = silence(0.6) + voiced(1.0) + silence(0.8)
    await stream(client, sent)
    first = await client.until("turn.metrics")
    assert kinds(first)[:2] == ["vad.speech_started", "state:recording"]
    order = kinds(first)
    assert order.index("vad.speech_stopped") < order.index("state:transcribing")
    assert order.index("state:transcribing") < order.index("state:thinking")
    assert order.index("state:speaking") < order.index("state:idle")
    # Positions in the stream: speech at 600 ms less OpenAI's default 300 ms of padding; its
    # end at 1600 ms plus the 500 ms of silence that ended it.
    assert event(first, "vad.speech_started").audio_ms == 300
    assert event(first, "vad.speech_stopped").audio_ms == 2100
    assert event(first, "transcript.done").text == TRANSCRIPTS[0]
    deltas = "".join(i.event.text for i in first if i.kind == "transcript.delta")  # type: ignore[union-attr]
    assert deltas == TRANSCRIPTS[0]
    assert event(first, "response.done").text == "The capital of France is Paris."
    # The session kept the turn's audio: from the padded start to (at least) the end.
    assert 1800 <= first[-1].event.audio_in_ms <= 2100  # type: ignore[union-attr]

    more = voiced(0.8) + silence(0.8)
    await stream(client, more)
    second = await client.until("turn.metrics")
    assert kinds(second)[:2] == ["vad.speech_started", "state:recording"]
    assert event(second, "vad.speech_started").audio_ms == 2100  # 2400 less 300
    assert event(second, "transcript.done").text == TRANSCRIPTS[1]
    assert second[-1].event.turn == 2  # type: ignore[union-attr]
    assert "error" not in kinds(first + second)

    # One connection did it all: the stream's, which the server's VAD committed by itself.
    assert len(realtime.connections) == 1
    assert realtime.received("input_audio_buffer.commit") == []
    await eventually(lambda: realtime.appended_audio() == sent + more)


@pytest.mark.parametrize(
    ("vad", "turn_detection"),
    [
        (
            {"threshold": 0.6, "min_silence_ms": 300, "speech_pad_ms": 100},
            {
                "type": "server_vad",
                "threshold": 0.6,
                "prefix_padding_ms": 100,
                "silence_duration_ms": 300,
            },
        ),
        (
            {"turn_detection": "semantic_vad", "eagerness": "high"},
            {"type": "semantic_vad", "eagerness": "high"},
        ),
    ],
)
async def test_the_vad_settings_reach_the_realtime_session(
    open_realtime: OpenRealtime,
    connect: ClientFactory,
    realtime: FakeRealtimeConfig,
    vad: dict[str, Any],
    turn_detection: dict[str, Any],
) -> None:
    client = await connect(*open_realtime(**vad))
    await hands_free(client)
    await eventually(lambda: realtime.received("session.update"))
    (update,) = realtime.received("session.update")
    assert update["session"]["audio"]["input"]["turn_detection"] == turn_detection
    await stream(client, silence(0.4) + voiced(0.8) + silence(0.6))
    items = await client.until("turn.metrics")
    assert event(items, "transcript.done").text == TRANSCRIPTS[0]


async def test_speech_over_the_reply_is_a_barge_in(
    open_realtime: OpenRealtime, connect: ClientFactory
) -> None:
    pipeline, settings = open_realtime(tts_chunk_delay=0.1)
    client = await connect(pipeline, settings)
    await hands_free(client)
    await stream(client, voiced(0.8) + silence(0.6))
    await client.until("audio")  # the reply is being spoken
    await stream(client, silence(0.2) + voiced(0.5))
    items = await client.until("state", state="recording")
    order = kinds(items)
    assert order[-4:] == ["vad.speech_started", "audio.done", "response.done", "state:recording"]
    assert event(items, "response.done").interrupted
    last: Any = items[-1].event
    assert (last.previous, last.turn) == ("speaking", 2)
    assert pipeline.tts.ledger.open == 0  # type: ignore[attr-defined]
    await stream(client, silence(0.6))
    second = await client.until("turn.metrics")
    assert event(second, "transcript.done").text == TRANSCRIPTS[1]


async def test_a_refused_connection_is_an_error_and_the_session_goes_on(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    client = await connect(*open_realtime())
    realtime.handshake_status = 503
    await client.send(HANDS_FREE)
    items = await client.until("session.updated")
    assert kinds(items) == ["error:provider-unavailable", "session.updated"]
    error: Any = items[0].event
    assert (error.stage, error.retryable) == ("stt", True)
    assert "HTTP 503" in error.message
    assert items[-1].event.session.mode == "push_to_talk"  # type: ignore[union-attr]
    await stream(client, voiced(0.3))  # what the client streams before it hears: no more errors
    assert await client.quiet(0.1) == []

    realtime.handshake_status = None
    await client.send(START)  # push-to-talk works
    await client.speak()
    await client.send(STOP)
    turn = await client.until("turn.metrics")
    assert "error" not in kinds(turn)
    await hands_free(client)  # and hands-free may be asked for again


async def test_a_connection_lost_mid_turn_ends_the_turn_and_hands_free(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    client = await connect(*open_realtime())
    await hands_free(client)
    realtime.drop_after_ms = 1000
    await stream(client, silence(0.5) + voiced(1.0))
    items = await client.until("session.updated")
    assert kinds(items) == [
        "vad.speech_started",
        "state:recording",
        *(["transcript.delta"] if "transcript.delta" in kinds(items) else []),
        "error:provider-unavailable",
        "state:idle",
        "session.updated",
    ]
    error: Any = event(items, "error")
    assert (error.stage, error.turn) == ("stt", 1)
    assert "closed the connection" in error.message
    assert items[-1].event.session.mode == "push_to_talk"  # type: ignore[union-attr]
    await stream(client, voiced(0.3))
    assert await client.quiet(0.1) == []  # the client streams on for a while: no more errors

    realtime.drop_after_ms = None
    await hands_free(client)
    await stream(client, voiced(0.8) + silence(0.6))
    turn = await client.until("turn.metrics")
    assert event(turn, "transcript.done").text == TRANSCRIPTS[0]  # the new connection's first
    assert len(realtime.connections) == 2


async def test_a_connection_lost_between_turns_ends_hands_free(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    client = await connect(*open_realtime())
    await hands_free(client)
    realtime.drop_after_ms = 300
    await stream(client, silence(0.5))
    items = await client.until("session.updated")
    assert kinds(items) == ["error:provider-unavailable", "session.updated"]
    assert client.session.state == "idle"
    assert client.session.hands_free is None


async def test_push_to_talk_closes_the_connection(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    client = await connect(*open_realtime())
    await hands_free(client)
    await stream(client, silence(0.3))
    await client.send(PUSH_TO_TALK)
    await client.until("session.updated")
    await eventually(lambda: realtime.closed == [0])
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    assert "error" not in kinds(await client.until("turn.metrics"))


async def test_a_turn_past_the_length_limit_is_dropped(
    open_realtime: OpenRealtime, connect: ClientFactory
) -> None:
    client = await connect(*open_realtime(max_audio_seconds=1.5))
    await hands_free(client)
    await stream(client, voiced(2.0) + silence(0.6))
    items = await client.until("state", state="idle")
    assert kinds(items) == [
        "vad.speech_started",
        "state:recording",
        *(["transcript.delta"] if "transcript.delta" in kinds(items) else []),
        "error:audio-too-long",
        "state:idle",
    ]
    await stream(client, voiced(0.4) + silence(0.6))  # 1.2 s with the padding and the silence
    turn = await client.until("turn.metrics")
    assert turn[-1].event.turn == 2  # type: ignore[union-attr]
    assert event(turn, "transcript.done").text == TRANSCRIPTS[1]


async def test_closing_the_session_closes_the_connection_and_every_task(
    open_realtime: OpenRealtime, connect: ClientFactory, realtime: FakeRealtimeConfig
) -> None:
    pipeline, settings = open_realtime()
    client = await connect(pipeline, settings)
    await hands_free(client)
    await stream(client, voiced(0.6))
    await client.until("state", state="recording")
    assert client.task is not None
    client.task.cancel()
    await asyncio.gather(client.task, return_exceptions=True)
    await eventually(lambda: realtime.closed == [0])
    await pipeline.aclose()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others
