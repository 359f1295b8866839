"""The test speech (voice_fsm.testing.speech): Piper's question is the same every time unless
asked to vary, so a test's transcript does not depend on a random draw."""

from __future__ import annotations

import numpy as np

from voice_fsm.audio import SAMPLE_RATE, pcm16_to_float

from support.local import require_engine

require_engine("piper")

from voice_fsm.testing.speech import silence, spoken, voiced  # noqa: E402

QUESTION = "What is the capital of France?"


def test_spoken_is_the_same_every_time() -> None:
    first, second = spoken(QUESTION), spoken(QUESTION)
    assert first == second
    # Padded as asked: 0.1 s of silence first, then speech, to 3 s in all.
    padded = spoken(QUESTION, total_s=3.0)
    assert len(padded) == 2 * 3 * SAMPLE_RATE
    assert padded[: len(first)] == first
    assert not any(padded[: 2 * int(0.1 * SAMPLE_RATE)])


def test_varied_speech_keeps_pipers_noise() -> None:
    draws = {spoken(QUESTION, varied=True) for _ in range(3)}
    assert len(draws) > 1
    # Still the question: about as long as the reproducible one.
    reference = len(spoken(QUESTION))
    assert all(abs(len(draw) - reference) < 0.3 * reference for draw in draws)


def test_silence_and_voiced() -> None:
    assert silence(0.5) == bytes(SAMPLE_RATE)
    buzz = pcm16_to_float(voiced(1.0))
    assert len(buzz) == SAMPLE_RATE
    assert float(np.sqrt(np.mean(buzz**2))) > 0.05
