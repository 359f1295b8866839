"""The record of one finished turn: the source of the `turn.completed` log line and of
everything derived from it (metrics, the dashboard, traces), so they cannot disagree.

Observers receive each record as the turn ends. They run on the session's task and must be
quick and never raise: an observer's failure is logged and the turn goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

TIMING_FIELDS = (
    "audio_in_ms",
    "stt_ms",
    "llm_first_token_ms",
    "llm_ms",
    "tts_first_audio_ms",
    "tts_ms",
    "voice_to_voice_ms",
)
"""The per-turn figures in milliseconds, as the log line and `turn.metrics` name them."""


@dataclass(frozen=True)
class TurnRecord:
    session_id: str
    turn: int
    outcome: str
    """ok, error, interrupted, cancelled, disconnected or shutdown."""
    mode: str
    """push_to_talk or hands_free."""
    providers: dict[str, str]
    """stt, llm and tts -> the provider that ran them (openai, openai-realtime, local, fake)."""
    timings: dict[str, int | None]
    """`TIMING_FIELDS` -> milliseconds, None where a stage did not run."""
    provider_requests: list[dict[str, str]] = field(default_factory=list)
    code: str | None = None
    """The error code, for outcome `error`."""
    stage: str | None = None
    """The stage that failed, for outcome `error`."""
    ended_at: float = field(default_factory=time.time)
    """Unix seconds."""
    marks: dict[str, float] = field(default_factory=dict)
    """The turn's moments (stt.start, llm.first_token, ...), in seconds since its start."""

    def log_fields(self) -> dict[str, Any]:
        """The `turn.completed` log line's fields (the logger adds session_id and turn)."""
        fields: dict[str, Any] = {"outcome": self.outcome, "mode": self.mode}
        fields.update(self.timings)
        fields["providers"] = self.providers
        fields["provider_requests"] = self.provider_requests
        if self.code is not None:
            fields["code"] = self.code
        if self.stage is not None:
            fields["stage"] = self.stage
        return fields


class TurnObserver(Protocol):
    def turn_ended(self, record: TurnRecord) -> None: ...


def notify(observers: Sequence[TurnObserver], record: TurnRecord, log: Any) -> None:
    for observer in observers:
        try:
            observer.turn_ended(record)
        except Exception:  # an observer's bug must not cost the session its turn
            log.exception("turn_observer.failed", observer=type(observer).__name__)
