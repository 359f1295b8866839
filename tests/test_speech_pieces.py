"""Cutting a streamed reply into speakable pieces, and what of it the user heard."""

from __future__ import annotations

import pytest

from voice_fsm.speakable import speakable
from voice_fsm.speech_pieces import ReplyCap, SentenceSplitter, SpokenReply


def split(text: str, step: int = 3, *, short_first_piece: bool = False) -> list[str]:
    """Feed `text` in deltas of `step` characters, as a language model streams it."""
    splitter = SentenceSplitter(short_first_piece=short_first_piece)
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
    # After a first sentence: only a reply's first piece may end before its sentence does.
    assert split("Yes. " + text, short_first_piece=True) == ["Yes.", text]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("The capital of France is Paris.", ["The capital of France", "is Paris."]),
        ("Hamlet was written by Shakespeare.", ["Hamlet was written", "by Shakespeare."]),
        ("There are 7 days in a week.", ["There are 7 days", "in a week."]),
        ("The sky is blue. It is big.", ["The sky is blue.", "It is big."]),  # "is": too soon
        (
            "Take two small white tablets every morning before breakfast.",
            ["Take two small white tablets every morning", "before breakfast."],
        ),
        (
            "Well, the capital, as you know, is Paris.",
            ["Well, the capital, as you know,", "is Paris."],  # a clause of 4 words
        ),
        (
            "The largest ocean is the Pacific. It is in the west, and it is big.",
            ["The largest ocean", "is the Pacific.", "It is in the west, and it is big."],
        ),
    ],
)
def test_the_first_piece_ends_before_a_phrase_or_at_seven_words(
    text: str, pieces: list[str]
) -> None:
    """Speech starts before the first sentence is written; later pieces are whole sentences."""
    assert split(text, step=2, short_first_piece=True) == pieces
    # Without it (speech engines that pause between pieces) a sentence or a clause.
    assert split(text, step=2)[0][-1] in ".,"


def test_a_stop_after_a_word_ends_the_first_piece_before_any_white_space() -> None:
    """The model's next token (often the end of the reply) would only confirm it."""
    splitter = SentenceSplitter()
    assert splitter.feed("The sky is blue.") == ["The sky is blue."]
    for unfinished in ("It costs 2.", "Ask Dr.", "Ask J.", "See e.g."):
        assert SentenceSplitter().feed(unfinished) == []


def test_a_very_long_sentence_is_cut_at_a_space() -> None:
    text = "word " * 80
    pieces = split(text)
    assert len(pieces) == 2
    assert split(text, short_first_piece=True)[0] == "word " * 6 + "word"  # seven words
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


# ------------------------------------------------------------- lists and markdown in speech


def test_a_numbered_list_item_is_not_a_sentence_end() -> None:
    text = "Here are two tips: 1. Drink warm milk. 2. Read a book. 3) Breathe slowly."
    assert split(text) == [
        "Here are two tips:",
        "Drink warm milk.",
        "Read a book.",
        "Breathe slowly.",
    ]
    # A short lead-in: the list starts in the same piece, and its number is not read out.
    assert split("Tips: 1. Drink water. 2. Read.") == ["Tips: Drink water.", "Read."]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("The answer is 51. That is all.", ["The answer is 51.", "That is all."]),
        ("It has 2. Not 3.", ["It has 2.", "Not 3."]),
        ("Chapter 12 is long. It has 12 parts.", ["Chapter 12 is long.", "It has 12 parts."]),
    ],
)
def test_a_number_ending_a_sentence_still_ends_it(text: str, pieces: list[str]) -> None:
    assert split(text) == pieces


def test_markdown_is_not_read_aloud() -> None:
    text = (
        "## Sleep tips\n\n"
        "1. **Keep a schedule.** Go to bed at the same time.\n"
        "2. *Avoid* screens 😴 before `bed`.\n"
        "- Try [white noise](https://example.com/noise).\n"
        "- Read __a book__\n"
    )
    pieces = split(text)
    assert pieces == [
        "Sleep tips",
        "Keep a schedule.",
        "Go to bed at the same time.",
        "Avoid screens before bed.",
        "Try white noise.",
        "Read a book",
    ]
    assert not any(ch in "".join(pieces) for ch in "*#`_[]()")


def test_markdown_alone_makes_no_piece() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("**\n\n") == []
    assert splitter.feed("---\n- ") == []
    assert splitter.feed("Yes. ") == ["Yes."]
    assert splitter.feed('You say "¡De nada! " ') == ['You say "¡De nada!']  # not the lone "
    assert splitter.feed("```") == []
    assert splitter.flush() == []


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("Use the `ls` command.", "Use the ls command."),
        ("```python\nprint(1)\n```", "print(1)"),
        ("It is **very** _important_.", "It is very important."),
        ("See snake_case names.", "See snake_case names."),
        ("# Title", "Title"),
        ("Great job! 🎉👍", "Great job!"),
        ("Water boils at 212°F.", "Water boils at 212 degrees Fahrenheit."),
        (
            "It is 20 °C (68°F) and 5° off.",
            "It is 20 degrees Celsius (68 degrees Fahrenheit) and 5 degrees off.",
        ),
        ("Pick one: 1. tea", "Pick one: tea"),
        ('"', ""),
        ("…", ""),
    ],
)
def test_speakable(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken


# ------------------------------------------------------------- capping a streamed reply

REPLY_TOKENS = [
    "Paris", " is", " the", " capital", " of", " France", ".",  # 7 tokens
    " It", " sits", " on", " the", " Seine", ".",  # 13
    " About", " two", " million", " people", " live", " there", ".",  # 20
]  # fmt: skip


def capped(tokens: list[str], soft: int, hard: int) -> tuple[list[str], ReplyCap]:
    """What a ReplyCap passes on from `tokens` (a model stream that ends after the last one,
    cut by its limit if that is `hard` tokens), as the LLM adapter drives it."""
    cap = ReplyCap(soft, hard)
    out: list[str] = []
    for token in tokens:
        if text := cap.feed(token):
            out.append(text)
        if cap.done:
            return out, cap
    if text := cap.finish(cut=len(tokens) >= hard):
        out.append(text)
    return out, cap


def spoken(out: list[str]) -> list[str]:
    """The pieces the splitter makes of what the cap passed on."""
    return split("".join(out), step=4)


@pytest.mark.parametrize(
    ("soft", "hard", "sentences", "tokens_used"),
    [
        (3, 100, 1, 8),  # stops at the first sentence end after 3 tokens (seen at " It")
        (8, 100, 1, 8),
        (9, 100, 2, 14),
        (15, 100, 3, 20),  # the stream ends by itself: its last sentence counts
        (100, 100, 3, 20),
        (3, 6, 0, 6),  # the first sentence is not over at the hard cap: cut
        (9, 12, 1, 12),  # "It sits on the Seine" unfinished at 12 tokens: dropped
        (9, 13, 2, 13),  # the 13th token ends the sentence: kept, though no space follows
    ],
)
def test_the_reply_cap_ends_on_a_sentence_boundary(
    soft: int, hard: int, sentences: int, tokens_used: int
) -> None:
    out, cap = capped(REPLY_TOKENS, soft, hard)
    expected = ["Paris is the capital of France.", "It sits on the Seine."]
    expected += ["About two million people live there."]

    assert cap.tokens == tokens_used
    assert cap.truncated == (sentences == 0 or (soft, hard) == (9, 12))
    if sentences:
        assert spoken(out) == expected[:sentences]
        assert "".join(out).strip().endswith(".")


def test_only_the_first_sentence_streams_token_by_token() -> None:
    cap = ReplyCap(100, 100)
    passed = [cap.feed(token) for token in REPLY_TOKENS]
    # Token by token up to the first sentence end, then a sentence at a time, each once the
    # white space after it shows that it has ended.
    assert passed[:7] == REPLY_TOKENS[:7]
    assert passed[7:13] == [" ", "", "", "", "", ""]  # the first sentence's space
    assert passed[13] == "It sits on the Seine. "  # once " About" shows that it ended
    assert passed[14:] == [""] * 6
    assert cap.finish() == "About two million people live there."


def test_the_cap_does_not_cut_a_list_at_its_numbers() -> None:
    tokens = ["Two", " tips", ":", "\n", "1", ".", " Drink", " water", ".", "\n", "2", ".", " Read"]
    tokens += [" a", " book", ".", "\n", "3", ".", " Sleep", " early", "."]
    out, cap = capped(tokens, 18, 19)  # the hard cap falls on item 3's "3."
    assert spoken(out) == ["Two tips:", "Drink water.", "Read a book."]
    assert cap.truncated
