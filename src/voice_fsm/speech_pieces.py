"""Cutting a streamed reply into pieces that can be spoken while the rest is being written,
and knowing how much of a spoken reply the user actually heard."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A sentence ends at . ! ? (or …) followed by white space, unless the word before the stop is
# an abbreviation or a single letter ("Dr.", "e.g.", "J. Smith").
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_CLAUSE_END = re.compile("[,;:\u2013\u2014]\\s")  # comma, semicolon, colon, dashes
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "approx",
        "no",
        "fig",
        "inc",
        "ltd",
        "co",
        "mt",
        "ft",
    ]
)
FIRST_CLAUSE_MIN_WORDS = 4
"""The first piece may end at a comma once it has this many words: it starts the audio early
and still sounds like a phrase."""
MAX_PIECE_CHARS = 250


def _is_abbreviation(text: str, stop: int) -> bool:
    words = text[:stop].split()
    if not words:
        return False
    last = words[-1].lower().strip("\"'([")
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


class SentenceSplitter:
    """Feed text deltas; get back speakable pieces in order, then `flush()` the rest."""

    def __init__(self) -> None:
        self._buffer = ""
        self._pieces = 0

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        while (piece := self._next_piece()) is not None:
            out.append(piece)
        return out

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            self._pieces += 1
            return [rest]
        return []

    def _next_piece(self) -> str | None:
        text = self._buffer
        cut = None
        for match in _SENTENCE_END.finditer(text):
            if not _is_abbreviation(text, match.start()):
                cut = match.end()
                break
        if cut is None and self._pieces == 0:
            for match in _CLAUSE_END.finditer(text):
                if len(text[: match.start()].split()) >= FIRST_CLAUSE_MIN_WORDS:
                    cut = match.end()
                    break
        if cut is None and len(text) > MAX_PIECE_CHARS:
            space = text.rfind(" ", 0, MAX_PIECE_CHARS)
            cut = space + 1 if space > 0 else MAX_PIECE_CHARS
        if cut is None:
            return None
        piece, self._buffer = text[:cut].strip(), text[cut:]
        if not piece:
            return None
        self._pieces += 1
        return piece


@dataclass
class SpokenReply:
    """The pieces of a reply in the order they were spoken, with their audio lengths."""

    pieces: list[tuple[str, int]] = field(default_factory=list)  # (text, audio bytes)

    def start_piece(self, text: str) -> None:
        self.pieces.append((text, 0))

    def add_audio(self, nbytes: int) -> None:
        text, sent = self.pieces[-1]
        self.pieces[-1] = (text, sent + nbytes)

    def heard(self, played_bytes: int) -> str:
        """The text of the first `played_bytes` of audio: whole pieces, then the share of the
        next piece's words that its played audio covers."""
        out: list[str] = []
        left = played_bytes
        for text, nbytes in self.pieces:
            if left >= nbytes:
                out.append(text)
                left -= nbytes
                continue
            words = text.split()
            share = int(len(words) * left / nbytes) if nbytes else 0
            if share:
                out.append(" ".join(words[:share]) + " …")
            break
        return " ".join(out)
