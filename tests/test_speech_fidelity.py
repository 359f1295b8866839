"""The comparison of what a Realtime speech response said with the text it was asked to read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from voice_fsm.adapters.openai import speech_fidelity
from voice_fsm.adapters.openai.speech_fidelity import check, normalised_words, word_error_rate

SENT = "The capital of France is Paris, and it has about two million people."


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    speech_fidelity.reset_counts()
    yield
    speech_fidelity.reset_counts()


def test_case_punctuation_and_spacing_are_ignored() -> None:
    assert normalised_words("  Don't — STOP!\n(now) ") == ["dont", "stop", "now"]
    assert word_error_rate(SENT, SENT.upper().replace(",", " ;  ")) == (0.0, 0)


@pytest.mark.parametrize(
    "spoken",
    [
        SENT,
        "The capital of France is Paris and it has about 2 million people",  # a number
        "The capital of France is Paris, and it's got about two million people.",  # 2 words
    ],
)
def test_a_faithful_read_does_not_diverge(spoken: str) -> None:
    with capture_logs() as logs:
        assert check(SENT, spoken) is False
    assert logs == []
    assert speech_fidelity.counts() == {"checked": 1, "diverged": 0}


@pytest.mark.parametrize(
    "spoken",
    [
        "Sure! Paris is the capital of France.",  # an answer
        "Paris, France's capital, is home to roughly two million people.",  # a paraphrase
        "The capital of France is Paris.",  # half left out
        "",  # nothing said
    ],
)
def test_an_answer_or_paraphrase_diverges(spoken: str) -> None:
    with capture_logs() as logs:
        assert check(SENT, spoken) is True
    [log] = logs
    assert (log["event"], log["sent"], log["spoken"]) == ("tts.diverged", SENT, spoken)
    assert speech_fidelity.counts() == {"checked": 1, "diverged": 1}


def test_one_word_of_a_short_sentence_is_tolerated_two_are_not() -> None:
    assert check("OK.", "Okay.") is False  # 100 % of one word: spelling, not a paraphrase
    assert check("Yes, thanks.", "Sure, no problem.") is True
    assert speech_fidelity.counts() == {"checked": 2, "diverged": 1}


def test_long_texts_are_cut_in_the_log_and_keys_removed() -> None:
    key = "sk-proj-abcdefghijklmnop"
    with capture_logs() as logs:
        check("word " * 400, f"{key} " + "other " * 400, secrets=("hunter2-secret",))
        check("Say hunter2-secret now please.", "I will not say that at all.", ("hunter2-secret",))
    assert all(len(log["sent"]) <= 200 and len(log["spoken"]) <= 200 for log in logs)
    assert not any(key in log["spoken"] or "hunter2" in log["sent"] for log in logs)


def test_listeners_hear_each_divergence_and_a_failing_one_does_no_harm() -> None:
    heard: list[float] = []

    def broken(_: speech_fidelity.Divergence) -> None:
        raise RuntimeError("exporter down")

    remove_broken = speech_fidelity.add_listener(broken)
    remove = speech_fidelity.add_listener(lambda d: heard.append(d.word_error_rate))
    assert check(SENT, "Something else entirely.") is True
    remove()
    remove_broken()
    assert check(SENT, "Something else again.") is True
    assert len(heard) == 1
    assert heard[0] == 1.0
    assert speech_fidelity.counts()["diverged"] == 2
