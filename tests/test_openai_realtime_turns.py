"""RealtimeTurnDetector: hands-free turns found by the fake Realtime server's VAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from voice_fsm import provider_requests
from voice_fsm.adapters.base import LiveTranscription, TurnDetector
from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
from voice_fsm.adapters.openai.realtime_turns import RealtimeTurnDetector, turn_detection
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import VadSettings
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.testing.speech import silence, voiced
from voice_fsm.vad_events import SpeechStarted, VadEvent

from support.servers import eventually

QUICK = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 100,
    "silence_duration_ms": 300,
}
TRANSCRIPTS = ("What is the capital of France?", "And of Italy?")
MakeStt = Callable[..., OpenAIRealtimeSpeechToText]


@pytest.fixture
async def detector(
    make_realtime_stt: MakeStt, realtime: FakeRealtimeConfig
) -> AsyncIterator[RealtimeTurnDetector]:
    realtime.transcripts = TRANSCRIPTS
    turns = await make_realtime_stt().detect_turns(turn_detection=QUICK)
    yield turns
    await turns.aclose()


async def events_until(turns: TurnDetector, count: int) -> list[VadEvent]:
    seen: list[VadEvent] = []
    async with asyncio.timeout(3):
        async for event in turns.events():
            seen.append(event)
            if len(seen) == count:
                break
    return seen


async def collect(live: LiveTranscription) -> list[str]:
    return [delta.text async for delta in live.deltas()]


def feed(turns: TurnDetector, pcm: bytes, frame_ms: int = 20) -> None:
    step = 48 * frame_ms
    for offset in range(0, len(pcm), step):
        assert turns.feed(pcm[offset : offset + step]) == []  # its events come later


async def test_each_utterance_is_a_turn_transcribed_on_the_one_connection(
    detector: RealtimeTurnDetector, realtime: FakeRealtimeConfig
) -> None:
    assert isinstance(detector, TurnDetector)
    stream = silence(0.5) + voiced(1.0) + silence(0.6) + voiced(0.8) + silence(0.6)
    feed(detector, stream)
    first, first_end, second, second_end = await events_until(detector, 4)
    assert isinstance(first, SpeechStarted)
    assert isinstance(second, SpeechStarted)
    assert (first.audio_ms, first_end.audio_ms) == (400, 1800)  # 100 ms padding, 300 ms silence
    assert (second.audio_ms, second_end.audio_ms) == (2000, 3200)
    assert (first_end.item, second_end.item) == (first.item, second.item)
    assert first.item != second.item
    assert first.item is not None
    assert second.item is not None

    texts, all_deltas, noted = [], [], []
    for event in (first, second):
        assert event.item is not None
        live = detector.transcription(event.item)
        deltas = asyncio.create_task(collect(live))
        requests = provider_requests.collect()  # what the turn's log line names
        texts.append(await live.finish())
        noted.append(requests)
        all_deltas.append("".join(await deltas))
    assert noted == [[{"stage": "stt", "id": first.item}], [{"stage": "stt", "id": second.item}]]
    assert texts == list(TRANSCRIPTS)
    assert all_deltas == list(TRANSCRIPTS)
    assert len(realtime.connections) == 1
    await eventually(lambda: len(realtime.appended_audio()) == len(stream))
    assert realtime.appended_audio() == stream
    assert realtime.received("input_audio_buffer.commit") == []  # the server commits


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            VadSettings(),
            {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
        ),
        (
            VadSettings(threshold=0.7, min_silence_ms=800, speech_pad_ms=120),
            {
                "type": "server_vad",
                "threshold": 0.7,
                "prefix_padding_ms": 120,
                "silence_duration_ms": 800,
            },
        ),
        (
            VadSettings(turn_detection="semantic_vad", eagerness="low", threshold=0.7),
            {"type": "semantic_vad", "eagerness": "low"},
        ),
    ],
)
async def test_the_settings_become_the_sessions_turn_detection(
    make_realtime_stt: MakeStt,
    realtime: FakeRealtimeConfig,
    settings: VadSettings,
    expected: dict[str, Any],
) -> None:
    turns = await make_realtime_stt().detect_turns(
        language="fr", turn_detection=turn_detection(settings)
    )
    await turns.aclose()
    await eventually(lambda: realtime.sent("session.updated"))
    (update,) = realtime.received("session.update")
    assert update["session"]["audio"]["input"]["turn_detection"] == expected
    assert update["session"]["audio"]["input"]["transcription"]["language"] == "fr"
    (updated,) = realtime.sent("session.updated")  # the fake accepted it
    assert updated["session"]["audio"]["input"]["turn_detection"] == expected


async def test_a_refused_connection_raises(
    make_realtime_stt: MakeStt, realtime: FakeRealtimeConfig
) -> None:
    realtime.handshake_status = 503
    with pytest.raises(ProviderError) as caught:
        await make_realtime_stt().detect_turns(turn_detection=QUICK)
    assert (caught.value.code, caught.value.stage) == (ErrorCode.PROVIDER_UNAVAILABLE, Stage.STT)


async def test_a_dropped_connection_ends_the_events_and_the_turn_in_progress(
    detector: RealtimeTurnDetector, realtime: FakeRealtimeConfig
) -> None:
    realtime.drop_after_ms = 800
    feed(detector, voiced(1.0))
    (started,) = await events_until(detector, 1)
    assert started.item is not None
    live = detector.transcription(started.item)
    assert await events_until(detector, 99) == []  # ended
    assert isinstance(detector.error, ProviderError)
    assert detector.error.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "closed the connection" in detector.error.message
    with pytest.raises(ProviderError) as caught:
        await live.finish()
    assert caught.value is detector.error
    assert detector.feed(voiced(0.1)) == []  # ignored, does not raise


async def test_an_error_event_ends_the_detector(
    detector: RealtimeTurnDetector, realtime: FakeRealtimeConfig
) -> None:
    realtime.errors["input_audio_buffer.append"] = {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Bad audio.",
    }
    feed(detector, voiced(0.1))
    assert await events_until(detector, 99) == []
    assert detector.error is not None
    assert detector.error.code == ErrorCode.PROVIDER_ERROR
    assert "Bad audio." in detector.error.message


async def test_a_failed_transcription_fails_only_its_turn(
    detector: RealtimeTurnDetector, realtime: FakeRealtimeConfig
) -> None:
    realtime.transcription_failure = "Audio could not be transcribed."
    feed(detector, voiced(0.5) + silence(0.5))
    started, _stopped = await events_until(detector, 2)
    assert started.item is not None
    with pytest.raises(ProviderError, match="could not be transcribed"):
        await detector.transcription(started.item).finish()
    assert detector.error is None
    realtime.transcription_failure = None
    feed(detector, voiced(0.5) + silence(0.5))
    again, _ = await events_until(detector, 2)
    assert again.item is not None
    assert await detector.transcription(again.item).finish() == TRANSCRIPTS[1]


async def test_finish_times_out(make_realtime_stt: MakeStt, realtime: FakeRealtimeConfig) -> None:
    realtime.transcription_delay = 5.0
    turns = await make_realtime_stt(timeout=0.3).detect_turns(turn_detection=QUICK)
    try:
        feed(turns, voiced(0.5) + silence(0.5))
        started, _ = await events_until(turns, 2)
        assert started.item is not None
        with pytest.raises(ProviderError) as caught:
            await turns.transcription(started.item).finish()
        assert caught.value.code == ErrorCode.PROVIDER_TIMEOUT
    finally:
        await turns.aclose()


async def test_aclose_closes_the_connection_and_leaves_no_task(
    make_realtime_stt: MakeStt, realtime: FakeRealtimeConfig
) -> None:
    stt = make_realtime_stt()
    turns = await stt.detect_turns(turn_detection=QUICK)
    feed(turns, voiced(0.5))
    (started,) = await events_until(turns, 1)
    assert started.item is not None
    live = turns.transcription(started.item)
    await turns.aclose()
    await turns.aclose()  # twice is fine
    assert await events_until(turns, 99) == []
    assert turns.error is None  # closed, not failed
    with pytest.raises(ProviderError, match="closed"):
        await live.finish()
    await eventually(lambda: realtime.closed == [0])
    await stt.aclose()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_closing_the_adapter_closes_its_detectors(
    make_realtime_stt: MakeStt, realtime: FakeRealtimeConfig
) -> None:
    stt = make_realtime_stt()
    await stt.detect_turns(turn_detection=QUICK)
    await stt.aclose()
    await eventually(lambda: realtime.closed == [0])
