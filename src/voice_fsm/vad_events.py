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


VadEvent = SpeechStarted | SpeechStopped
