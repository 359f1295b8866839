"""Cutting a streamed reply into speakable pieces, and what of it the user heard."""

from __future__ import annotations

import pytest

from voice_fsm.speech_pieces import SentenceSplitter, SpokenReply


def split(text: str, step: int = 3) -> list[str]:
    """Feed `text` in deltas of `step` characters, as a language model streams it."""
    splitter = SentenceSplitter()
    pieces: list[str] = []
    for start in range(0, len(text), step):
        pieces += splitter.feed(text[start : start + step])
    return pieces + splitter.flush()


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Paris is the capital") == []
    assert splitter.feed(". It is ") == ["Paris is the capital."]
    assert splitter.feed("big!") == []  # no white space yet: "big!" may go on ("big!!")
    assert splitter.feed(" Yes") == ["It is big!"]
    assert splitter.flush() == ["Yes"]
    assert splitter.flush() == []


def test_the_first_piece_may_be_a_clause_later_ones_are_sentences() -> None:
    text = "Well, the capital of France, as you know, is Paris. Lyon, by the way, is second."
    assert split(text) == [
        "Well, the capital of France,",
        "as you know, is Paris.",
        "Lyon, by the way, is second.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith met Mr. Jones at 5 p.m. on the dot.",
        "It costs 2.50 euros for e.g. a coffee.",
        "J. R. R. Tolkien wrote it.",
    ],
)
def test_abbreviations_initials_and_numbers_do_not_end_a_sentence(text: str) -> None:
    assert split(text) == [text]


def test_a_very_long_sentence_is_cut_at_a_space() -> None:
    text = "word " * 80
    pieces = split(text)
    assert len(pieces) == 2
    assert all(len(piece) <= 250 for piece in pieces)
    assert " ".join(pieces).split() == text.split()


def test_nothing_is_lost_or_reordered() -> None:
    text = "One. Two, three, four, five! Six? Seven… Eight."
    for step in (1, 2, 5, 100):
        assert " ".join(split(text, step)).split() == text.split()


def test_heard_text_follows_the_played_audio() -> None:
    spoken = SpokenReply()
    spoken.start_piece("Paris is the capital.")
    spoken.add_audio(1000)
    spoken.start_piece("It has two million people living there.")
    spoken.add_audio(600)
    spoken.add_audio(600)
    assert spoken.heard(0) == ""
    assert spoken.heard(999) == "Paris is the …"
    assert spoken.heard(1000) == "Paris is the capital."
    assert spoken.heard(1600) == "Paris is the capital. It has two …"
    assert spoken.heard(5000) == "Paris is the capital. It has two million people living there."
