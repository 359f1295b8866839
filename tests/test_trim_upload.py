"""What a completed-recording transcription is sent: a hands-free turn's speech and a short pad,
not the silence window that ended it; a push-to-talk turn's recording whole. The real OpenAI
speech-to-text adapter against the fake OpenAI server, which keeps each upload."""

from __future__ import annotations

import dataclasses
import io
import wave
from typing import Any

import pytest
import structlog

from voice_fsm import stages
from voice_fsm.adapters.local.builders import vad_factory
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.stt import OpenAISpeechToText
from voice_fsm.audio import bytes_for_ms, duration_ms
from voice_fsm.events import InputAudioStart, InputAudioStop, ServerEvent
from voice_fsm.hands_free import HandsFree
from voice_fsm.hands_free_mode import HandsFreeMode, TurnControl
from voice_fsm.testing.fake_openai import FakeOpenAIConfig
from voice_fsm.testing.speech import silence, spoken, voiced
from voice_fsm.turn import SPEECH_END_PAD_MS, Turn

from conftest import ClientFactory
from session_harness import fake_pipeline, make_settings
from support.local import require_engine
from support.openai_wire import openai_settings

WINDOW_MS = 500  # the detector's silence window (VadSettings.min_silence_ms)


def uploaded_pcm(config: FakeOpenAIConfig) -> list[bytes]:
    """The PCM of each recording the fake was sent, out of its WAV."""
    pcms = []
    for request in config.received("transcriptions"):
        assert request.file is not None
        with wave.open(io.BytesIO(request.file.data)) as wav:
            pcms.append(wav.readframes(wav.getnframes()))
    return pcms


@pytest.fixture
async def stt(fake_openai: tuple[FakeOpenAIConfig, str]) -> Any:
    settings = openai_settings("stt", base_url=fake_openai[1])
    adapter = OpenAISpeechToText(settings.stt, make_openai_client(settings, settings.stt))
    yield adapter
    await adapter.aclose()


class OneTurn:
    """A session's side of hands-free mode, reduced to one turn's recording."""

    def __init__(self) -> None:
        self.turn = Turn(1)
        self.on = False
        self.events: list[ServerEvent] = []

    def control(self) -> TurnControl:
        async def start(_transcriber: Any) -> None:
            self.on = True

        async def record(audio: bytes) -> None:
            self.turn.audio.append(audio)

        async def stop() -> None:
            self.on = False
            self.turn.audio.close()

        async def send(event: ServerEvent) -> None:
            self.events.append(event)

        async def nothing() -> None:
            pass

        used: dict[str, Any] = {
            "recording": lambda: self.on,
            "turn_number": lambda: 1,
            "start_turn": start,
            "record": record,
            "stop_turn": stop,
            "send": send,
            "speech_ended": self.turn.speech_ended,
        }
        # The session's other commands (a reply started ahead, say) do nothing here.
        others = {
            item.name: nothing
            for item in dataclasses.fields(TurnControl)
            if item.name not in used and item.default is dataclasses.MISSING
        }
        return TurnControl(**used, **others)


async def test_a_hands_free_turn_sends_its_speech_and_a_pad(
    stt: OpenAISpeechToText, fake_openai: tuple[FakeOpenAIConfig, str]
) -> None:
    require_engine("piper")
    require_engine("onnxruntime")
    factory = vad_factory(make_settings())
    assert factory is not None
    session = OneTurn()
    mode = HandsFreeMode(HandsFree(factory()), session.control(), failed=pytest.fail)
    stream = silence(0.6) + spoken("What is the capital of France?", lead_s=0.0) + silence(1.0)
    step = bytes_for_ms(20)
    for offset in range(0, len(stream), step):
        await mode.frame(stream[offset : offset + step])
    await mode.aclose()
    started, stopped = (event.audio_ms for event in session.events)  # type: ignore[union-attr]

    text = await stages.transcribe(
        session.turn,
        stt,
        language=None,
        send=ignore,
        close_soon=lambda _live: None,
        log=structlog.get_logger(),
    )
    assert text == fake_openai[0].transcript
    (upload,) = uploaded_pcm(fake_openai[0])
    recorded = bytes(b"".join([c async for c in session.turn.audio.chunks()]))
    # The recording ran on through the silence window, which the detector waited for...
    assert duration_ms(len(recorded)) >= stopped - started + WINDOW_MS - 100
    # ... but the upload is the speech from its (padded) start to its end and the pad.
    assert abs(duration_ms(len(upload)) - (stopped - started + SPEECH_END_PAD_MS)) <= 1
    assert recorded.startswith(upload)


async def ignore(_event: object) -> None:
    pass


async def test_a_push_to_talk_turn_sends_its_recording_whole(
    connect: ClientFactory, stt: OpenAISpeechToText, fake_openai: tuple[FakeOpenAIConfig, str]
) -> None:
    client = await connect(fake_pipeline(stt=stt))
    sent = silence(0.3) + voiced(0.8) + silence(0.7)  # pauses and all: the user's choice
    await client.send(InputAudioStart(type="input_audio.start"))
    await client.until("state", state="recording")
    step = bytes_for_ms(40)
    for offset in range(0, len(sent), step):
        await client.send(sent[offset : offset + step])
    await client.send(InputAudioStop(type="input_audio.stop"))
    await client.until("turn.metrics")
    assert uploaded_pcm(fake_openai[0]) == [sent]
