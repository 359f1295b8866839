"""Cutting a streamed reply into pieces that can be spoken while the rest is being written,
and knowing how much of a spoken reply the user actually heard."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voice_fsm.speakable import LIST_MARKER, speakable

# A sentence ends at . ! ? (or …) followed by white space, unless the word before the stop is
# an abbreviation or a single letter ("Dr.", "e.g.", "J. Smith") or a list item's number at the
# start of a line or a piece ("1. Drink water."). A line break ends a piece too (list items).
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]*_`]*\s|\n")
_CLAUSE_END = re.compile("[,;:\u2013\u2014]\\s")  # comma, semicolon, colon, dashes
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "a.m", "p.m"}
) | {"approx", "no", "fig", "inc", "ltd", "co", "mt", "ft"}
FIRST_CLAUSE_MIN_WORDS = 4
"""The first piece may end at a comma once it has this many words: it starts the audio early
and still sounds like a phrase."""
FIRST_PHRASE_MIN_WORDS = 3
"""... or before a word that starts a phrase (`_PHRASE_STARTS`) once it has this many words:
"The capital of France | is Paris.", "Hamlet was written | by William Shakespeare."."""
FIRST_PIECE_MAX_WORDS = 7
"""... and at the latest after this many words. Measured with the embedded engines (Qwen2.5
0.5B, about 60 ms a token on 2 cores; Piper): a short answer's first piece then goes to speech
2 to 4 tokens before its sentence ends (120-250 ms sooner), and the rest of the sentence is
ready long before the first piece has been heard."""
_PHRASE_STARTS = frozenset(
    {"is", "are", "was", "were", "by", "in", "on", "at", "for", "from", "with", "and", "but"}
) | {"or", "because", "so", "which", "who", "that"}
MAX_PIECE_CHARS = 250


def _is_abbreviation(text: str, stop: int) -> bool:
    words = text[:stop].split()
    if not words:
        return False
    last = words[-1].lower().strip("\"'([")
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


def _is_list_marker(text: str, stop: int) -> bool:
    """Whether the stop at `stop` follows a list item's number (`1.`) that starts the text, a
    line or a sentence, or is a first item after a colon (`tips: 1.`): "is 51." still ends a
    sentence."""
    before = text[:stop]
    words = before.split()
    if not words or not LIST_MARKER.fullmatch(words[-1] + text[stop : stop + 1]):
        return False
    head = before[: len(before) - len(words[-1])].rstrip(" \t")
    return head == "" or head[-1] in "\n.!?" or (head[-1] == ":" and words[-1] == "1")


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    if "\n" in match.group():
        return True
    return not _is_abbreviation(text, match.start()) and not _is_list_marker(text, match.start())


def sentence_end(text: str, start: int = 0) -> int | None:
    """Where the first sentence ending at or after `start` in `text` ends (after its white
    space), or None: the splitter's rule, for cutting a reply at a sentence boundary."""
    for match in _SENTENCE_END.finditer(text, start):
        if _ends_sentence(text, match):
            return match.end()
    return None


def last_sentence_end(text: str) -> int:
    """Where the last complete sentence of `text` ends (0: none has ended yet)."""
    end, cut = 0, sentence_end(text)
    while cut is not None:
        end, cut = cut, sentence_end(text, cut)
    return end


class SentenceSplitter:
    """Feed text deltas; get back speakable pieces in order, then `flush()` the rest.

    The first piece may end at a clause; with `short_first_piece` also before a phrase or at
    FIRST_PIECE_MAX_WORDS words (for a speech engine that starts speaking sooner on a short
    text and joins pieces without a pause: the embedded Piper)."""

    def __init__(self, *, short_first_piece: bool = False) -> None:
        self._buffer = ""
        self._pieces = 0
        self._short_first = short_first_piece

    def feed(self, delta: str) -> list[str]:
        """The pieces that `delta` completes, cleaned for speech (`speakable`)."""
        self._buffer += delta
        out: list[str] = []
        while (piece := self._next_piece()) is not None:
            if piece:  # a piece of markdown alone ("**", "1.") says nothing
                out.append(piece)
        return out

    def flush(self) -> list[str]:
        rest, self._buffer = speakable(self._buffer), ""
        if rest:
            self._pieces += 1
            return [rest]
        return []

    def _next_piece(self) -> str | None:
        """The next piece ("" if it is empty once cleaned), or None if none has ended yet."""
        text = self._buffer
        cut = sentence_end(text)
        if cut is None and self._pieces == 0:
            cut = _first_piece_end(text, words=self._short_first)
        if cut is None and len(text) > MAX_PIECE_CHARS:
            space = text.rfind(" ", 0, MAX_PIECE_CHARS)
            cut = space + 1 if space > 0 else MAX_PIECE_CHARS
        if cut is None:
            return None
        piece, self._buffer = speakable(text[:cut]), text[cut:]
        if piece:
            self._pieces += 1
        return piece


def _first_piece_end(text: str, *, words: bool) -> int | None:
    """Where the first piece of a reply may end before its first sentence does: at a clause,
    at a stop that ends the text (the white space that would confirm it is a token later),
    and with `words` before a phrase's first word or after FIRST_PIECE_MAX_WORDS words,
    whichever comes first."""
    cuts: list[int] = []
    for match in _CLAUSE_END.finditer(text):
        if len(text[: match.start()].split()) >= FIRST_CLAUSE_MIN_WORDS:
            cuts.append(match.end())
            break
    for n, word in enumerate(re.finditer(r"\S+", text) if words else ()):
        if n >= FIRST_PHRASE_MIN_WORDS and word.group().lower() in _PHRASE_STARTS:
            cuts.append(word.start())
            break
        complete = word.end() < len(text)
        if n + 1 == FIRST_PIECE_MAX_WORDS and complete:
            cuts.append(word.end())
            break
    if _final_stop(text):
        cuts.append(len(text))
    return min(cuts, default=None)


def _final_stop(text: str) -> bool:
    """Whether `text` ends with a stop after a word of two letters or more that is no
    abbreviation ("Paris."): the sentence's end, though no white space has followed yet."""
    stripped = text.rstrip(".!?")
    if stripped == text or not (words := stripped.split()):
        return False
    word = words[-1].strip("\"')]*_`")
    return len(word) >= 2 and word.isalpha() and not _is_abbreviation(stripped + " ", len(stripped))


class ReplyCap:
    """Ends a streamed reply on a sentence boundary, never mid-sentence.

    Feed it the model's tokens' text (`feed`, one call per token, "" for a token without text)
    and say how the stream ended (`finish`); it gives back the text to pass on. Past
    `soft_tokens` the reply stops at its next sentence end; at `hard_tokens` it stops, and the
    unfinished sentence is dropped. The first sentence passes through token by token, so speech
    can start at its first clause; later text is held back until its sentence ends (speech takes
    whole sentences from there on anyway), so what was passed on always ends a sentence.
    """

    def __init__(self, soft_tokens: int, hard_tokens: int) -> None:
        self.hard_tokens = hard_tokens
        self.soft_tokens = min(soft_tokens, hard_tokens)
        self.tokens = 0
        self.done = False
        self.truncated = False  # stopped at the hard cap with a sentence unfinished
        self._passed = ""  # the first sentence, as far as it has been passed on
        self._held = ""  # after the first sentence: text whose sentence has not ended yet
        self._first_done = False

    def feed(self, delta: str) -> str:
        """The text to pass on now; afterwards `done` says whether to stop generating."""
        if self.done:
            return ""
        self.tokens += 1
        out, ended = "", False
        if not self._first_done:
            text = self._passed + delta
            end = sentence_end(text)
            if end is None:
                self._passed, out = text, delta
            else:
                self._first_done = ended = True
                out, self._held = text[len(self._passed) : end], text[end:]
                self._passed = text[:end]
        else:
            self._held += delta
        if self._first_done:
            end = last_sentence_end(self._held)
            ended = ended or end > 0
            out, self._held = out + self._held[:end], self._held[end:]
        if ended and self.tokens >= self.soft_tokens:
            self.done = True
            self._held = ""
        elif self.tokens >= self.hard_tokens:
            out += self._cut()
        return out

    @property
    def first_sentence_done(self) -> bool:
        """Whether the first sentence has been passed on whole."""
        return self._first_done

    def finish(self, cut: bool = False) -> str:
        """The stream has ended: by itself (the last sentence is passed on, even without a full
        stop), or, with `cut`, at the model's own token limit (as at the hard cap)."""
        if self.done:
            return ""
        if cut:
            return self._cut()
        self.done = True
        rest, self._held = self._held, ""
        return rest

    def _cut(self) -> str:
        """Stop at the hard cap: pass on the held text only if it ends a sentence (the last
        token may have ended one without the white space that shows it)."""
        self.done = True
        rest, self._held = self._held, ""
        if not self._first_done:
            self.truncated = not _ends_complete(self._passed)
            return ""
        if _ends_complete(rest):
            return rest
        self.truncated = bool(rest.strip())
        return ""


def _ends_complete(text: str) -> bool:
    """Whether `text`, if nothing followed, would end on a sentence end."""
    return bool(text.strip()) and last_sentence_end(text.rstrip() + " ") == len(text.rstrip()) + 1


@dataclass
class SpokenReply:
    """The pieces of a reply in the order they were spoken, with their audio lengths.

    A piece's text is what the speech provider said, which is the text it was given unless
    it reported otherwise (`spoken_instead`): the history keeps what the user heard."""

    pieces: list[tuple[str, int]] = field(default_factory=list)  # (text, audio bytes)
    diverged: bool = False
    """A piece was spoken other than written: `text()` is the reply as heard."""

    def start_piece(self, text: str, *, filler: bool = False) -> None:
        """A filler ("One moment.") takes its time in the audio but is not the model's text:
        the history does not keep it."""
        self.pieces.append(("" if filler else text, 0))

    def spoken_instead(self, text: str) -> None:
        """The piece being spoken said `text` rather than what it was given (a speech model
        that answered or paraphrased). A filler stays out of the history all the same."""
        written, nbytes = self.pieces[-1]
        if written:
            self.pieces[-1] = (text.strip(), nbytes)
            self.diverged = True

    def text(self) -> str:
        """The whole reply as spoken, fillers left out."""
        return " ".join(text for text, _ in self.pieces if text)

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
                if text:
                    out.append(text)
                left -= nbytes
                continue
            words = text.split()
            share = int(len(words) * left / nbytes) if nbytes else 0
            if share:
                out.append(" ".join(words[:share]) + " …")
            break
        return " ".join(out)
