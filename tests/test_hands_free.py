"""Hands-free turns: the microphone streams all the time and Silero VAD starts and ends turns.

Real speech (made with Piper) and the real detector; fake speech-to-text, LLM and speech.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voice_fsm.adapters.fake import FakeSpeechToText, FakeTextToSpeech
from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import SessionConfig, SessionUpdate
from voice_fsm.providers import Pipeline, _vad_factory

from conftest import ClientFactory
from session_harness import Client, fake_pipeline, kinds, make_settings
from support.local import require_engine

require_engine("onnxruntime")
require_engine("piper")

from voice_fsm.testing.speech import silence, spoken  # noqa: E402

HANDS_FREE = SessionUpdate(type="session.update", session=SessionConfig(mode="hands_free"))


@pytest.fixture(scope="module")
def question() -> bytes:
    return spoken("What is the capital of France?", lead_s=0.0)


def with_vad(pipeline: Pipeline) -> Pipeline:
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
