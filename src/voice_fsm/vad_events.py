"""What voice activity detection reports: in a module of its own, so the session can use the
names without importing onnxruntime (the embedded engines are optional)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_ms: int
    """Where speech starts in the stream (less `speech_pad_ms`, not before 0)."""
    item: str | None = None
    """A provider's id for this speech, when the provider detects it (`TurnDetector`)."""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_ms: int
    """Where speech ends in the stream (plus `speech_pad_ms`)."""
    item: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The speech went silent (its first frames below the detector's lower threshold): the
    user may have finished, which `SpeechStopped` confirms once the silence has lasted its
    window. Only a detector that hears each frame (the embedded one) reports it."""

    audio_ms: int
    """Where the silence began."""


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech again after `SpeechPaused`, before the silence window ended: the turn goes on."""

    audio_ms: int


VadEvent = SpeechStarted | SpeechStopped | SpeechPaused | SpeechResumed
