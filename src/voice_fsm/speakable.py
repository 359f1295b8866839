"""Text as it should be read aloud: without the markdown a language model writes for screens.

Speech gets the cleaned text; the transcript shown to the user keeps what the model wrote.
"""

from __future__ import annotations

import re

_CODE_FENCE = re.compile(r"```[\w+-]*")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]*", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*[-*•+][ \t]+", re.MULTILINE)
_NUMBERED = re.compile(r"^[ \t]*\d{1,2}[.)][ \t]+", re.MULTILINE)
# "Two tips: 1. …": the first item of a list written on one line.
_FIRST_ITEM_AFTER_COLON = re.compile(r"(:[ \t]+)1[.)][ \t]+")
_EMPHASIS_UNDERSCORES = re.compile(r"(?<!\w)_+|_+(?!\w)")
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d]",
)
_DEGREES = re.compile(r"\s*°\s*([CF])\b|\s*°")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_STOP = re.compile(r"\s+(?=[.,!?;:])")

LIST_MARKER = re.compile(r"\d{1,2}[.)]")
"""A numbered list item's marker: `1.`, `2)` (at the start of a line or a piece)."""


def speakable(text: str) -> str:
    """`text` without markdown: no code fences, backticks, emphasis, headings, rules, bullets,
    list numbers, link targets or emoji; °F and °C said in words; white space collapsed; "" without
    a letter or digit."""
    text = _CODE_FENCE.sub(" ", text)
    text = text.replace("`", "")
    text = _LINK.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _RULE.sub("", text)
    text = _BULLET.sub("", text)
    text = _NUMBERED.sub("", text)
    text = _FIRST_ITEM_AFTER_COLON.sub(r"\1", text)
    text = text.replace("*", "").replace("#", "")
    text = _EMPHASIS_UNDERSCORES.sub("", text)
    text = _EMOJI.sub("", text)
    text = _DEGREES.sub(_degrees, text)
    text = _SPACE_BEFORE_STOP.sub("", text)
    if not any(ch.isalnum() for ch in text):
        return ""  # a stray quote or stop alone says nothing
    return _SPACE.sub(" ", text).strip()


def _degrees(match: re.Match[str]) -> str:
    scale = {"C": " Celsius", "F": " Fahrenheit"}.get(match.group(1) or "", "")
    return " degrees" + scale
