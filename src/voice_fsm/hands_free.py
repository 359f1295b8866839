"""Hands-free turns: the client streams the microphone all the time and voice activity
detection decides when a turn starts and ends.

The detector is a `TurnDetector`: the embedded one (Silero VAD) decides in `feed`, a
provider's (OpenAI Realtime's VAD) later, its events relayed into the session's inbox as
`Detected` by a task of their own, and each turn it finds comes transcribed.

`HandsFree` keeps the last seconds of the stream, so a turn that the detector confirms a
little after the speech began still starts with its first syllable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from voice_fsm.adapters.base import LiveSpeechToText, LiveTranscription, TurnDetector
from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, bytes_for_ms
from voice_fsm.errors import VoiceError
from voice_fsm.vad_events import SpeechStarted, VadEvent

DetectorFactory = Callable[[], TurnDetector]


class TurnDetectorFactory(Protocol):
    async def __call__(self, *, language: str | None) -> TurnDetector:
        """Open one stream's turn detection at the provider. Raises `ProviderError`."""
        ...


@dataclass(frozen=True, slots=True)
class Detected:
    """What a provider's detector reported for `stream`: an event, or the error that ended it."""

    stream: HandsFree
    event: VadEvent | VoiceError


Relay = Callable[[Detected], Awaitable[None]]


class HandsFree:
    def __init__(
        self, detector: TurnDetector, *, relay: Relay | None = None, keep_ms: int = 1500
    ) -> None:
        """`relay`: where the events the detector decides later go (a detector that decides
        them all in `feed` needs none)."""
        self.detector = detector
        self._keep = bytes_for_ms(keep_ms)
        self._recent = bytearray()  # the end of the stream, at most `keep_ms`
        self._position = 0  # bytes fed since the start of the stream
        self._relay: asyncio.Task[None] | None = None
        if relay is not None:
            self._relay = asyncio.create_task(self._run_relay(detector, relay), name="hands-free")

    @property
    def position_ms(self) -> int:
        return self._position * 1000 // (BYTES_PER_SAMPLE * SAMPLE_RATE)

    def feed(self, frame: bytes) -> list[VadEvent]:
        """The next frame of the stream; the events the detector decides by it at once."""
        self._position += len(frame)
        self._recent += frame
        if len(self._recent) > self._keep:
            del self._recent[: len(self._recent) - self._keep]
        return self.detector.feed(frame)

    def audio_since(self, ms: int) -> bytes:
        """The stream from position `ms` up to now (as much of it as is still kept)."""
        start = max(bytes_for_ms(ms), self._position - len(self._recent))
        return bytes(self._recent[len(self._recent) - (self._position - start) :])

    def transcriber(self, event: SpeechStarted) -> LiveSpeechToText | None:
        """What transcribes the turn `event` starts: the detector, when it heard it as one of
        its items (a provider's), else None (the pipeline's speech-to-text)."""
        if event.item is not None:
            return _ItemTranscriber(self.detector, event.item)
        return None

    async def aclose(self) -> None:
        """Stop relaying and close the detector (a provider's: its connection)."""
        if self._relay is not None:
            self._relay.cancel()
            await asyncio.wait({self._relay})
        await self.detector.aclose()

    async def _run_relay(self, detector: TurnDetector, relay: Relay) -> None:
        async for event in detector.events():
            await relay(Detected(self, event))
        if detector.error is not None:  # else it was closed, which its closer knows
            await relay(Detected(self, detector.error))


class _ItemTranscriber:
    """A `LiveSpeechToText` whose one live transcription is the detector's transcript of `item`."""

    def __init__(self, detector: TurnDetector, item: str) -> None:
        self._detector = detector
        self._item = item

    async def start_live(self, *, language: str | None = None) -> LiveTranscription:
        return self._detector.transcription(self._item)
