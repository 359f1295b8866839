"""What a turn run by `talk` gives back (`TalkResult`), its summary for a person, and the
error for a turn that could not be run (`TalkError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE
from voice_fsm.events import ErrorEvent, ServerEvent, SessionCreated, TurnMetrics


class TalkError(Exception):
    """The turn could not be run: a bad file, no connection, a timeout, a protocol violation."""


@dataclass(slots=True)
class TalkResult:
    session: SessionCreated
    turn: int | None = None
    transcript: str = ""
    reply: str = ""
    audio: bytes = b""
    metrics: TurnMetrics | None = None
    error: ErrorEvent | None = None
    events: list[ServerEvent] = field(default_factory=list)
    stop_sent_at: float | None = None  # time.perf_counter() when input_audio.stop went out
    first_audio_at: float | None = None  # ... and when the first reply audio arrived

    @property
    def client_voice_to_voice_ms(self) -> int | None:
        """End of the user's audio to the first reply audio, as this client saw it."""
        if self.stop_sent_at is None or self.first_audio_at is None:
            return None
        return round((self.first_audio_at - self.stop_sent_at) * 1000)

    @property
    def ok(self) -> bool:
        return self.error is None and self.metrics is not None

    def to_json(self) -> dict[str, Any]:
        """The summary `voice-fsm talk --json` prints."""
        return {
            "session_id": self.session.session_id,
            "turn": self.turn,
            "transcript": self.transcript,
            "reply": self.reply,
            "metrics": self.metrics.model_dump(exclude={"type"}) if self.metrics else None,
            "audio_bytes": len(self.audio),
            "error": self.error.model_dump(mode="json", exclude={"type"}) if self.error else None,
        }


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def summary_lines(result: TalkResult, out: str | Path | None = None) -> list[str]:
    """Human-readable lines for a finished turn."""
    lines = []
    if result.transcript or result.ok:
        lines.append(f"you: {result.transcript}")
    if result.reply or result.ok:
        lines.append(f"agent: {result.reply}")
    if result.audio:
        seconds = len(result.audio) / (BYTES_PER_SAMPLE * SAMPLE_RATE)
        target = f" -> {out}" if out is not None else ""
        lines.append(f"audio: {seconds:.2f} s ({len(result.audio)} bytes){target}")
    metrics = result.metrics
    if metrics is not None:
        lines.append(
            f"voice-to-voice: {_ms(metrics.voice_to_voice_ms)} ms "
            f"(stt {_ms(metrics.stt_ms)}, llm first token {_ms(metrics.llm_first_token_ms)}, "
            f"tts first audio {_ms(metrics.tts_first_audio_ms)})"
        )
    return lines
