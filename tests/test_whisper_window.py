"""How a turn is cut into a short Whisper window and how its segments are read back: the
padding and bounds of the window, segments that start after the speech dropped, and a small
model's habit of starting the utterance over."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from support.local import require_engine

require_engine("faster_whisper")

from voice_fsm.adapters.local.whisper_window import (  # noqa: E402
    LONGEST_S,
    SAMPLE_RATE,
    fits_window,
    is_no_speech,
    max_tokens,
    segment_texts,
    window_features,
    without_restarts,
)

EOT = 50257
TS = 50364  # the first timestamp token, <|0.00|>


class FakeTokenizer(SimpleNamespace):
    """Token n < EOT decodes to the word `w<n>`; timestamps count 20 ms from TS."""

    def __init__(self) -> None:
        super().__init__(eot=EOT, timestamp_begin=TS)

    def decode(self, tokens: list[int]) -> str:
        return "".join(f" w{t}" for t in tokens)


def at(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def test_segments_are_read_between_their_timestamps() -> None:
    tokens = [at(0.0), 1, 2, at(1.0), at(1.0), 3, at(1.8), EOT]

    assert segment_texts(FakeTokenizer(), tokens, audio_s=2.0) == [" w1 w2", " w3"]


def test_a_segment_starting_where_the_speech_has_ended_is_dropped() -> None:
    # The model "hears" the padding: a segment from 1.95 s in 2.0 s of audio.
    tokens = [at(0.0), 1, 2, at(1.5), at(1.95), 7, 8, at(2.9)]

    assert segment_texts(FakeTokenizer(), tokens, audio_s=2.0) == [" w1 w2"]


def test_an_unended_last_segment_counts_when_it_started_in_time() -> None:
    tokens = [at(0.0), 1, 2, 3]  # the token budget ran out

    assert segment_texts(FakeTokenizer(), tokens, audio_s=2.0) == [" w1 w2 w3"]


def test_nothing_heard_gives_no_segment() -> None:
    assert segment_texts(FakeTokenizer(), [EOT], audio_s=1.0) == []
    assert segment_texts(FakeTokenizer(), [at(0.0), at(0.5), EOT], audio_s=1.0) == []


@pytest.mark.parametrize(
    ("texts", "kept"),
    [
        ([" How many days are in a leap year?", " How many"], 1),
        ([" What is the capital of France?", " What is the capital of France?"], 1),
        ([" Five.", " Five."], 2),  # one word again is speech, not a restart
        # Starting with the same words is speech; only the start again (as far as it goes) is not.
        ([" He was not an ill disposed man,", " he was not cold hearted."], 2),
        ([" Tell me a joke.", " Make it short."], 2),
        ([], 0),
    ],
)
def test_a_segment_that_starts_the_utterance_over_ends_it(texts: list[str], kept: int) -> None:
    assert without_restarts(texts) == texts[:kept]


def fake_model() -> SimpleNamespace:
    """A WhisperModel's feature extractor: 100 frames a second, 80 mels, no padding asked."""

    def features(samples: np.ndarray, padding: int) -> np.ndarray:
        assert padding == 0
        return np.zeros((80, len(samples) // 160 + 1), dtype=np.float32)

    return SimpleNamespace(feature_extractor=features)


@pytest.mark.parametrize(
    ("seconds", "frames"),
    [(0.0, 300), (0.5, 300), (2.0, 350), (10.0, 1150), (LONGEST_S, 2950)],
)
def test_the_window_is_the_turn_plus_padding_at_least_three_seconds(
    seconds: float, frames: int
) -> None:
    samples = np.ones(int(seconds * SAMPLE_RATE), dtype=np.float32)

    shape = window_features(fake_model(), samples).shape  # type: ignore[arg-type]

    assert shape == (1, 80, frames)


def test_longer_turns_take_the_thirty_second_path_and_text_is_bounded() -> None:
    assert fits_window(np.zeros(int(LONGEST_S * SAMPLE_RATE), dtype=np.float32))
    assert not fits_window(np.zeros(int(LONGEST_S * SAMPLE_RATE) + 1, dtype=np.float32))
    assert max_tokens(np.zeros(2 * SAMPLE_RATE)) == 28
    assert max_tokens(np.zeros(int(LONGEST_S * SAMPLE_RATE))) == 224


@pytest.mark.parametrize(
    ("no_speech", "score", "expected"),
    [(0.9, -1.5, True), (0.9, -0.2, False), (0.3, -1.5, False), (0.3, -0.2, False)],
)
def test_no_speech_needs_the_model_to_say_so_and_to_be_unsure_of_its_words(
    no_speech: float, score: float, expected: bool
) -> None:
    assert is_no_speech(no_speech, score, length=9) is expected
