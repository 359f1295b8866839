"""OpenAIRealtimeSpeechToText against the fake Realtime server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from voice_fsm import provider_requests
from voice_fsm.adapters.base import (
    LiveSpeechToText,
    LiveTranscription,
    SpeechToText,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
from voice_fsm.adapters.openai.realtime_transcription import SpeechStarted, SpeechStopped, VadEvent
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

from conftest import REALTIME_KEY as KEY
from support.servers import eventually, free_port

TRANSCRIPT = "What is the capital of France?"
CHUNK = 4800  # 100 ms of PCM16 at 24 kHz
SERVER_VAD = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 100,
    "silence_duration_ms": 200,
}


def tone(ms: int, amplitude: float = 0.2) -> bytes:
    t = np.arange(24 * ms) / 24_000
    return (amplitude * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


# 600 ms of a ramp, so a byte order, sample width or chunking mistake changes the bytes.
AUDIO = (np.arange(14_400) % 2000 - 1000).astype("<i2").tobytes()


async def collect(live: LiveTranscription, into: list[str]) -> None:
    async for delta in live.deltas():
        into.append(delta.text)


async def test_implements_both_protocols(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText],
) -> None:
    stt = make_realtime_stt()
    assert isinstance(stt, SpeechToText)
    assert isinstance(stt, LiveSpeechToText)
    assert (stt.provider, stt.model) == ("openai", "gpt-live-transcribe")


async def test_live_deltas_arrive_before_finish(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    deltas: list[str] = []
    async with await make_realtime_stt().start_live() as live:
        assert isinstance(live, LiveTranscription)
        reading = asyncio.create_task(collect(live, deltas))
        for start in range(0, len(AUDIO), CHUNK):
            await live.append(AUDIO[start : start + CHUNK])
        await eventually(lambda: len(deltas) >= 3)
        before_finish = list(deltas)
        text = await live.finish()
        await reading
    assert text == TRANSCRIPT
    assert TRANSCRIPT.startswith("".join(before_finish))
    assert "".join(deltas) == TRANSCRIPT


async def test_the_committed_item_is_noted_for_the_turns_log(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    requests = provider_requests.collect()
    async with await make_realtime_stt().start_live() as live:
        await live.append(AUDIO)
        assert await live.finish() == TRANSCRIPT
    (committed,) = realtime.sent("input_audio_buffer.committed")
    assert requests == [{"stage": "stt", "id": committed["item_id"]}]


async def test_session_update_has_the_exact_shape(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    async with await make_realtime_stt().start_live():
        await eventually(lambda: realtime.sent("session.updated"))
    connection = realtime.connections[0]
    assert connection.query == {"intent": "transcription"}
    assert connection.headers["authorization"] == f"Bearer {KEY}"
    (update,) = realtime.received("session.update")
    assert update == {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-live-transcribe", "language": "en"},
                    "turn_detection": None,
                    "noise_reduction": {"type": "near_field"},
                }
            },
        },
    }


async def test_appended_audio_arrives_intact(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    pieces = [AUDIO[: 1001 * 2], AUDIO[2002:9000], b"", AUDIO[9000:]]
    async with await make_realtime_stt().start_live() as live:
        for piece in pieces:
            await live.append(piece)
        await live.finish()
    assert realtime.appended_audio() == AUDIO
    assert len(realtime.received("input_audio_buffer.append")) == 3  # the empty piece is not sent
    assert [e["type"] for e in realtime.received()][-1] == "input_audio_buffer.commit"


async def test_transcribe_a_completed_recording(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    events = [event async for event in make_realtime_stt().transcribe(AUDIO)]
    assert events[-1] == TranscriptDone(TRANSCRIPT)
    assert all(isinstance(event, TranscriptDelta) for event in events[:-1])
    assert "".join(e.text for e in events[:-1]) == TRANSCRIPT
    assert realtime.appended_audio() == AUDIO


async def test_transcribe_can_delegate_to_a_fallback(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    class Fallback:
        provider, model = "other", "file-model"
        closed = False

        async def transcribe(self, pcm: bytes, *, language: str | None = None) -> Any:
            yield TranscriptDone(f"{len(pcm)} bytes in {language}")

        async def aclose(self) -> None:
            self.closed = True

    fallback = Fallback()
    stt = make_realtime_stt(fallback=fallback)
    events: list[TranscriptEvent] = [e async for e in stt.transcribe(AUDIO, language="fr")]
    assert events == [TranscriptDone(f"{len(AUDIO)} bytes in fr")]
    assert realtime.connections == []
    await stt.aclose()
    assert fallback.closed


async def test_too_little_audio_gives_an_empty_transcript(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    async with await make_realtime_stt().start_live() as live:
        await live.append(AUDIO[:960])  # 20 ms: the server refuses to commit it
        assert await live.finish() == ""
    assert realtime.sent("error")[0]["error"]["code"] == "input_audio_buffer_commit_empty"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ErrorCode.PROVIDER_AUTH),
        (403, ErrorCode.PROVIDER_AUTH),
        (429, ErrorCode.PROVIDER_RATE_LIMITED),
        (503, ErrorCode.PROVIDER_UNAVAILABLE),
    ],
)
async def test_refused_handshakes(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText],
    realtime: FakeRealtimeConfig,
    status: int,
    code: ErrorCode,
) -> None:
    realtime.handshake_status = status
    with pytest.raises(ProviderError) as caught:
        await make_realtime_stt().start_live()
    assert (caught.value.code, caught.value.stage) == (code, Stage.STT)
    assert f"HTTP {status}" in caught.value.message


async def test_a_wrong_key_is_provider_auth_without_the_key(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    wrong = "sk-proj-wrongKEY9876543210zyx"
    with pytest.raises(ProviderError) as caught:
        await make_realtime_stt(key=wrong).start_live()
    assert caught.value.code == ErrorCode.PROVIDER_AUTH
    assert "Incorrect API key provided" in caught.value.message
    assert wrong not in caught.value.message
    assert wrong[-4:] not in caught.value.message  # the vendor's masked key is redacted too


async def test_connection_refused_is_provider_unavailable(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText],
) -> None:
    stt = make_realtime_stt(base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ProviderError) as caught:
        await stt.start_live()
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert caught.value.message.startswith("Could not reach OpenAI speech-to-text")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"type": "server_error", "code": None}, ErrorCode.PROVIDER_UNAVAILABLE),
        ({"type": "invalid_request_error", "code": "invalid_value"}, ErrorCode.PROVIDER_ERROR),
        (
            {"type": "invalid_request_error", "code": "rate_limit_exceeded"},
            ErrorCode.PROVIDER_RATE_LIMITED,
        ),
    ],
)
async def test_error_events_become_provider_errors(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText],
    realtime: FakeRealtimeConfig,
    error: dict[str, Any],
    code: ErrorCode,
) -> None:
    message = f"Something went wrong for {KEY}."
    realtime.errors["input_audio_buffer.commit"] = {**error, "message": message, "param": None}
    async with await make_realtime_stt().start_live() as live:
        await live.append(AUDIO)
        with pytest.raises(ProviderError) as caught:
            await live.finish()
        assert live.error is caught.value
    assert (caught.value.code, caught.value.stage) == (code, Stage.STT)
    assert "Something went wrong for [redacted]." in caught.value.message
    assert KEY not in caught.value.message


async def test_an_error_during_recording_ends_the_deltas_and_fails_finish(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    realtime.errors["input_audio_buffer.append"] = {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Bad audio.",
    }
    deltas: list[str] = []
    async with await make_realtime_stt().start_live() as live:
        reading = asyncio.create_task(collect(live, deltas))
        await live.append(AUDIO)
        await asyncio.wait_for(reading, 2)  # ended by the error
        await live.append(AUDIO)  # does not raise
        with pytest.raises(ProviderError, match=r"Bad audio\. \(invalid_value\)"):
            await live.finish()
    assert deltas == []


async def test_a_failed_transcription_is_a_provider_error(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    realtime.transcription_failure = "Audio could not be transcribed."
    async with await make_realtime_stt().start_live() as live:
        await live.append(AUDIO)
        with pytest.raises(ProviderError, match="Audio could not be transcribed") as caught:
            await live.finish()
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE  # a server_error


async def test_finish_times_out(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    realtime.transcription_delay = 5.0
    async with await make_realtime_stt(timeout=0.2).start_live() as live:
        await live.append(AUDIO)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProviderError) as caught:
            await live.finish()
        assert asyncio.get_running_loop().time() - started < 1.0
    assert caught.value.code == ErrorCode.PROVIDER_TIMEOUT


async def test_aclose_mid_stream_leaves_no_task_running(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    stt = make_realtime_stt()
    deltas: list[str] = []
    live = await stt.start_live()
    reading = asyncio.create_task(collect(live, deltas))
    await live.append(AUDIO[: CHUNK * 2])
    await eventually(lambda: deltas)
    await live.aclose()
    await asyncio.wait_for(reading, 1)  # the deltas ended
    await live.aclose()  # twice is fine
    with pytest.raises(ProviderError):
        await live.finish()
    await stt.aclose()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_cancelling_finish_propagates(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    realtime.transcription_delay = 5.0
    live = await make_realtime_stt().start_live()
    try:
        await live.append(AUDIO)
        finishing = asyncio.create_task(live.finish())
        await eventually(lambda: realtime.received("input_audio_buffer.commit"))
        finishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finishing
    finally:
        await live.aclose()


async def test_closing_transcribe_early_closes_the_session(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    stt = make_realtime_stt()
    realtime.transcription_delay = 5.0
    events = stt.transcribe(AUDIO)
    assert isinstance(await anext(events), TranscriptDelta)
    await events.aclose()  # type: ignore[attr-defined]
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_server_vad_events_are_surfaced(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    seen: list[VadEvent] = []
    stt = make_realtime_stt(turn_detection=SERVER_VAD)
    async with await stt.start_live(on_vad=seen.append) as live:
        await live.append(tone(300, 0.0) + tone(500) + tone(300, 0.0))
        events: list[VadEvent] = []
        async for event in live.vad_events():
            events.append(event)
            if isinstance(event, SpeechStopped):
                break
        assert await live.finish() == TRANSCRIPT
    assert events == seen
    started, stopped = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(stopped, SpeechStopped)
    assert (started.audio_start_ms, stopped.audio_end_ms) == (200, 1000)
    assert started.item_id == stopped.item_id
    update = realtime.received("session.update")[0]
    assert update["session"]["audio"]["input"]["turn_detection"] == SERVER_VAD


async def test_turn_detection_can_be_set_per_transcription(
    make_realtime_stt: Callable[..., OpenAIRealtimeSpeechToText], realtime: FakeRealtimeConfig
) -> None:
    stt = make_realtime_stt(turn_detection=SERVER_VAD)
    async with await stt.start_live(turn_detection=None):
        pass
    async with await make_realtime_stt().start_live(turn_detection={"type": "semantic_vad"}):
        pass
    await eventually(lambda: len(realtime.received("session.update")) == 2)
    updates = [realtime.received("session.update", connection)[0] for connection in (0, 1)]
    details = [update["session"]["audio"]["input"]["turn_detection"] for update in updates]
    assert details == [None, {"type": "semantic_vad"}]


def test_the_live_model_comes_from_settings() -> None:
    settings = Settings(_env_file=None, openai_api_key=SecretStr(KEY))
    stt_settings = settings.stt.model_copy()
    object.__setattr__(stt_settings, "live_model", "gpt-live-transcribe-2027")
    stt = OpenAIRealtimeSpeechToText(stt_settings, make_openai_client(settings, settings.stt))
    assert stt.model == "gpt-live-transcribe-2027"
