"""`/v1/realtime` with `server_vad`: the stock `openai` SDK streams audio and the server's turn
detection (OpenAI Realtime's VAD, at the fake Realtime server, whose VAD hears loudness) ends
each turn and answers it at once; without a detector, turn detection is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from test_realtime_endpoint import MODEL, Realtime, commit_a_turn, kinds, sdk_client, serving
from voice_fsm.audio import bytes_for_ms
from voice_fsm.providers import build_pipeline
from voice_fsm.settings import (
    FakeSettings,
    LlmSettings,
    Settings,
    SttSettings,
    TtsSettings,
    VadSettings,
)
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.testing.speech import silence, voiced

from conftest import REALTIME_KEY
from session_harness import make_settings

pytestmark = pytest.mark.integration

VAD_ON = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}


@pytest.fixture
async def vad_rt(
    realtime_server: tuple[FakeRealtimeConfig, str], realtime: FakeRealtimeConfig
) -> AsyncIterator[Realtime]:
    realtime.transcripts = ["What is the capital of France?"]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        openai_api_key=SecretStr(REALTIME_KEY),
        openai_base_url=realtime_server[1],
        stt=SttSettings(live=True, timeout=2.0, max_retries=0),
        llm=LlmSettings(provider="fake"),
        tts=TtsSettings(provider="fake"),
        vad=VadSettings(provider="openai-realtime"),
        fake=FakeSettings(llm_first_token_delay=0.01, tts_first_audio_delay=0.01),
    )
    pipeline = build_pipeline(settings)
    async with (
        serving(settings, pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


async def test_a_server_vad_turn_is_detected_transcribed_and_answered(vad_rt: Realtime) -> None:
    rt = vad_rt
    await rt.next()
    await rt.send({"type": "session.update", "session": VAD_ON})
    updated = (await rt.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    pcm = silence(0.6) + voiced(1.0) + silence(0.8)
    step = bytes_for_ms(100)
    for offset in range(0, len(pcm), step):
        await rt.append(pcm[offset : offset + step])
        await asyncio.sleep(0)
    events = await rt.until("response.done")
    names = kinds(events)
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    assert [names.index(name) for name in order] == sorted(names.index(name) for name in order)
    started = events[names.index("input_audio_buffer.speech_started")]
    committed = events[names.index("input_audio_buffer.committed")]
    assert committed["item_id"] == started["item_id"]
    completed = events[names.index("conversation.item.input_audio_transcription.completed")]
    assert completed["transcript"] == "What is the capital of France?"
    assert events[-1]["response"]["status"] == "completed"
    assert "error" not in names


async def test_without_a_detector_turn_detection_is_refused_and_commits_still_work() -> None:
    async with (
        serving(make_settings()) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        rt = Realtime(connection)
        await rt.created()
        await rt.send({"type": "session.update", "session": VAD_ON, "event_id": "vad"})
        error: Any = await rt.next()
        assert error["type"] == "error"
        assert error["error"]["code"] == "turn_detection_unavailable"
        assert error["error"]["event_id"] == "vad"
        heard = await commit_a_turn(rt)
        assert heard[-1]["transcript"] == "What is the capital of France?"
        await rt.send({"type": "response.create"})
        assert (await rt.until("response.done"))[-1]["response"]["status"] == "completed"
