"""Whether a Realtime speech response said what it was asked to read.

Realtime text-to-speech asks a conversational model to read each text verbatim; a model may
answer or paraphrase instead, and only the response's output transcript tells. `check`
compares the two by word error rate after normalisation and logs and counts a divergence.

The threshold: a response diverges when more than `MAX_WORD_ERROR_RATE` (0.2) of the text's
words are substituted, left out or added *and* at least `MIN_WORD_ERRORS` (2) words are. The
transcript is the model's own account of its audio, and normalisation cannot reconcile every
way of writing the same spoken words ("3" / "three", "OK" / "okay", "Dr." / "doctor"): one such
word in a short sentence would otherwise count. A faithful read of a ten-word sentence with one
number written differently costs one or two words (0.1-0.2); an answer or a paraphrase changes
most of them (0.5 and up).

`counts()` is what a metrics exporter reads; `add_listener` is for one that wants each
divergence as it happens (the Prometheus metrics count them by provider,
``voice_fsm_tts_diverged_total``). `check`'s answer tells the caller to keep what was spoken,
not what was sent: the reply stage puts it in the history the language model sees.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from voice_fsm.errors import redact
from voice_fsm.logging_setup import get_logger

MAX_WORD_ERROR_RATE = 0.2
MIN_WORD_ERRORS = 2
MAX_WORDS = 500
"""Words compared of each side: the edit distance costs their product. A sentence is far less."""
LOGGED_CHARS = 200


@dataclass(frozen=True, slots=True)
class Divergence:
    sent: str
    spoken: str
    word_error_rate: float
    provider: str = ""
    """The speech provider that diverged (``openai-realtime``), and its model."""
    model: str = ""


_counts = {"checked": 0, "diverged": 0}
_listeners: list[Callable[[Divergence], None]] = []


def counts() -> dict[str, int]:
    """Responses checked and responses that diverged, since start-up (or `reset_counts`)."""
    return dict(_counts)


def reset_counts() -> None:
    for key in _counts:
        _counts[key] = 0


def add_listener(listener: Callable[[Divergence], None]) -> Callable[[], None]:
    """Call `listener` with each divergence; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def normalised_words(text: str) -> list[str]:
    """`text`'s words, case, punctuation and spacing ignored ("Don't!" and "dont" are one)."""
    kept = []
    for char in unicodedata.normalize("NFKC", text).casefold():
        if char in "'\u2019":  # ASCII and typographic apostrophes
            continue  # an apostrophe joins its word: "don't" is "dont", not "don t"
        kept.append(" " if unicodedata.category(char)[0] in "PSZC" else char)
    return "".join(kept).split()[:MAX_WORDS]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Words substituted, deleted or inserted to turn `reference` into `hypothesis`."""
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, heard in enumerate(hypothesis, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard))
            )
        previous = current
    return previous[-1]


def word_error_rate(sent: str, spoken: str) -> tuple[float, int]:
    """The word error rate of `spoken` against `sent`, and the number of word errors."""
    reference, hypothesis = normalised_words(sent), normalised_words(spoken)
    errors = word_errors(reference, hypothesis)
    if not reference:
        return (0.0 if not hypothesis else 1.0), errors
    return errors / len(reference), errors


def check(
    sent: str,
    spoken: str,
    secrets: tuple[str, ...] = (),
    *,
    provider: str = "",
    model: str = "",
) -> bool:
    """Whether `spoken` (a response's output transcript) diverges from `sent`; logged and
    counted if so, naming the `provider` and `model` that spoke."""
    rate, errors = word_error_rate(sent, spoken)
    _counts["checked"] += 1
    if rate <= MAX_WORD_ERROR_RATE or errors < MIN_WORD_ERRORS:
        return False
    _counts["diverged"] += 1
    divergence = Divergence(sent, spoken, rate, provider, model)
    log = get_logger(stage="tts")  # at call time: a logger cached at import misses test capture
    log.warning(
        "tts.diverged",
        sent=_cut(sent, secrets),
        spoken=_cut(spoken, secrets),
        word_error_rate=round(rate, 3),
        provider=provider,
        model=model,
    )
    for listener in list(_listeners):
        try:
            listener(divergence)
        except Exception:  # a metrics hook must not cost the user the sentence
            log.exception("tts.diverged_listener_failed")
    return True


def _cut(text: str, secrets: tuple[str, ...]) -> str:
    text = redact(text, secrets)
    return text if len(text) <= LOGGED_CHARS else text[: LOGGED_CHARS - 1] + "…"
