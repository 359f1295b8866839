"""Hands-free turns: the client streams the microphone all the time and voice activity
detection decides when a turn starts and ends.

`HandsFree` keeps the last second or so of the stream, so a turn that the detector confirms
a little after the speech began still starts with its first syllable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, bytes_for_ms
from voice_fsm.vad_events import VadEvent

if TYPE_CHECKING:
    from voice_fsm.vad import SpeechDetector

DetectorFactory = Callable[[], "SpeechDetector"]


class HandsFree:
    def __init__(self, detector: SpeechDetector, *, keep_ms: int = 1500) -> None:
        self.detector = detector
        self._keep = bytes_for_ms(keep_ms)
        self._recent = bytearray()  # the end of the stream, at most `keep_ms`
        self._position = 0  # bytes fed since the start of the stream

    @property
    def position_ms(self) -> int:
        return self._position * 1000 // (BYTES_PER_SAMPLE * SAMPLE_RATE)

    def feed(self, frame: bytes) -> list[VadEvent]:
        self._position += len(frame)
        self._recent += frame
        if len(self._recent) > self._keep:
            del self._recent[: len(self._recent) - self._keep]
        return self.detector.feed(frame)

    def audio_since(self, ms: int) -> bytes:
        """The stream from position `ms` up to now (as much of it as is still kept)."""
        start = max(bytes_for_ms(ms), self._position - len(self._recent))
        return bytes(self._recent[len(self._recent) - (self._position - start) :])

    def reset(self) -> None:
        self.detector.reset()
        self._recent.clear()
        self._position = 0
