"""SileroVad and SpeechDetector with the real Silero v6 model, on speech synthesized by Piper."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import pytest

from voice_fsm.adapters.local.packages import LocalModelMissing
from voice_fsm.audio import SAMPLE_RATE, bytes_for_ms, float_to_pcm16, pcm16_to_float

from support.local import require_engine

require_engine("onnxruntime")
require_engine("faster_whisper")  # ships the Silero model
require_engine("piper")

from onnxruntime import InferenceSession  # noqa: E402

from voice_fsm.testing.speech import spoken  # noqa: E402
from voice_fsm.vad import (  # noqa: E402
    FRAME_MS,
    SileroVad,
    SpeechDetector,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    VadEvent,
    load_silero_session,
)

QUESTION = "What is the capital of France?"
ANSWER = "The weather is nice today."


@pytest.fixture(scope="module")
def say() -> Callable[[str], np.ndarray]:
    """Speak a text with Piper as float32 24 kHz samples, cached for the module."""
    try:
        spoken("Hello.")  # loads the voice
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))

    @functools.cache
    def speak(text: str) -> np.ndarray:
        return pcm16_to_float(spoken(text, lead_s=0.0))

    return speak


@pytest.fixture(scope="module")
def session() -> InferenceSession:
    return load_silero_session()


def silence(ms: int) -> np.ndarray:
    return np.zeros(ms * SAMPLE_RATE // 1000, dtype=np.float32)


def in_chunks(pcm: bytes, ms: int = 20) -> list[bytes]:
    size = bytes_for_ms(ms)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def test_speech_is_likely_and_silence_is_not(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    vad = SileroVad(session)

    speech = np.array(vad.probabilities(float_to_pcm16(say(QUESTION))))
    vad.reset()
    quiet = vad.probabilities(float_to_pcm16(silence(2000)))
    vad.reset()
    noise = np.random.default_rng(1).normal(0.0, 0.005, 2 * SAMPLE_RATE)
    hiss = vad.probabilities(float_to_pcm16(noise))

    assert np.mean(speech > 0.5) > 0.75
    assert len(quiet) == 2000 // FRAME_MS
    assert max(quiet) < 0.2
    assert max(hiss) < 0.2


def test_state_carries_across_chunks(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    pcm = float_to_pcm16(np.concatenate([say(QUESTION), silence(300), say(ANSWER)]))
    whole = SileroVad(session).probabilities(pcm)

    vad = SileroVad(session)
    # Odd sizes too: a chunk may end inside a sample.
    pieces = [p for chunk in in_chunks(pcm) for p in (chunk[:7], chunk[7:])]
    streamed = [prob for piece in pieces for prob in vad.probabilities(piece)]

    assert len(streamed) == len(whole) == vad.frames
    assert np.allclose(streamed, whole, atol=0.02)


def test_reset_forgets_the_stream(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    pcm = float_to_pcm16(say(QUESTION))
    vad = SileroVad(session)
    first = vad.probabilities(pcm)

    vad.probabilities(pcm[: bytes_for_ms(500) + 1])  # state, buffered samples, an odd byte
    vad.reset()

    assert vad.frames == 0
    assert vad.probabilities(pcm) == first


def run_detector(detector: SpeechDetector, audio: np.ndarray) -> list[VadEvent]:
    return [event for chunk in in_chunks(float_to_pcm16(audio)) for event in detector.feed(chunk)]


def turns(events: list[VadEvent]) -> list[VadEvent]:
    """The starts and stops, without the pauses between them."""
    return [e for e in events if isinstance(e, SpeechStarted | SpeechStopped)]


def test_detector_finds_two_utterances(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    first, second = say(QUESTION), say(ANSWER)
    audio = np.concatenate([silence(500), first, silence(1200), second, silence(1000)])
    # Piper's audio has a little silence at both ends: find where the voice really is.
    voiced = [np.flatnonzero(np.abs(s) > 0.01) * 1000 // SAMPLE_RATE for s in (first, second)]
    second_offset = 500 + len(first) * 1000 // SAMPLE_RATE + 1200
    expected: list[VadEvent] = [
        SpeechStarted(500 + voiced[0][0]),
        SpeechStopped(500 + voiced[0][-1]),
        SpeechStarted(second_offset + voiced[1][0]),
        SpeechStopped(second_offset + voiced[1][-1]),
    ]
    detector = SpeechDetector(SileroVad(session))

    events = turns(run_detector(detector, audio))

    assert [type(e) for e in events] == [type(e) for e in expected]
    for event, wanted in zip(events, expected, strict=True):
        assert abs(event.audio_ms - wanted.audio_ms) <= 300, (events, expected)
    assert not detector.speaking


def test_detector_ignores_silence_noise_and_blips(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    noise = np.random.default_rng(2).normal(0.0, 0.005, 2 * SAMPLE_RATE).astype(np.float32)
    blip = say(QUESTION)[SAMPLE_RATE // 5 : SAMPLE_RATE // 5 + SAMPLE_RATE // 8]  # 125 ms
    detector = SpeechDetector(SileroVad(session), min_speech_ms=250)

    events = run_detector(detector, np.concatenate([silence(1000), noise, blip, silence(1000)]))

    assert events == []


def test_detector_reset_forgets_speech(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    detector = SpeechDetector(SileroVad(session))
    events = run_detector(detector, say(QUESTION)[:SAMPLE_RATE])  # cut mid-sentence

    assert [type(e) for e in turns(events)] == [SpeechStarted]
    assert detector.speaking

    detector.reset()

    assert not detector.speaking
    assert run_detector(detector, silence(1500)) == []  # no SpeechStopped for the old speech
    events = run_detector(detector, np.concatenate([silence(500), say(ANSWER), silence(800)]))
    assert [type(e) for e in turns(events)] == [SpeechStarted, SpeechStopped]
    # Positions count from the reset: 1.5 s + 0.5 s of silence, then Piper's short lead-in.
    assert 1900 <= events[0].audio_ms <= 2300


def test_a_pause_is_heard_at_once_and_the_stop_a_silence_window_later(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    # The user stops: the pause comes with the first silent frames, where the silence begins;
    # the stop confirms it once the silence has lasted `min_silence_ms`.
    detector = SpeechDetector(SileroVad(session), min_silence_ms=500)
    pcm = float_to_pcm16(np.concatenate([silence(500), say(QUESTION), silence(1000)]))
    fed_ms: dict[type, int] = {}
    events: list[VadEvent] = []
    for offset in range(0, len(pcm), bytes_for_ms(32)):
        for event in detector.feed(pcm[offset : offset + bytes_for_ms(32)]):
            events.append(event)
            fed_ms.setdefault(type(event), (offset + bytes_for_ms(32)) * 1000 // 48000)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechStopped]
    paused, stopped = events[1], events[2]
    assert stopped.audio_ms - paused.audio_ms == detector.speech_pad_ms
    assert fed_ms[SpeechStopped] - fed_ms[SpeechPaused] >= 500 - 2 * FRAME_MS


def test_a_pause_mid_sentence_resumes_without_a_stop(
    session: InferenceSession, say: Callable[[str], np.ndarray]
) -> None:
    # 300 ms of silence in the middle of a sentence, under a 500 ms silence window.
    audio = np.concatenate(
        [silence(500), say("What is the capital"), silence(300), say("of France?"), silence(900)]
    )
    events = run_detector(SpeechDetector(SileroVad(session), min_silence_ms=500), audio)

    assert [type(e) for e in events] == [
        SpeechStarted,
        SpeechPaused,
        SpeechResumed,
        SpeechPaused,
        SpeechStopped,
    ]
    assert 250 <= events[2].audio_ms - events[1].audio_ms <= 600  # the pause, Piper's ends too


def test_detector_rejects_bad_settings(session: InferenceSession) -> None:
    vad = SileroVad(session)
    with pytest.raises(ValueError, match="threshold"):
        SpeechDetector(vad, threshold=1.5)
    with pytest.raises(ValueError, match="negative"):
        SpeechDetector(vad, min_silence_ms=-1)
