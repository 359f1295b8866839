"""The record of one finished turn: the source of the `turn.completed` log line and of
everything derived from it (metrics, the dashboard, traces), so they cannot disagree.

Observers receive each record as the turn ends. They run on the session's task and must be
quick and never raise: an observer's failure is logged and the turn goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voice_fsm.speculation import SpeculationStats
    from voice_fsm.turn import Turn

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

SPECULATION_FIELDS = (
    "speculative_replies",
    "wasted_replies",
    "wasted_llm_chars",
    "wasted_speech_ms",
)
"""What the turn's replies started ahead of its end did and cost (`speculation.py`)."""

LOG_FIELDS: dict[str, str] = {
    "event": "`turn.completed`",
    "session_id": "the session (`sess_` and 16 hex digits)",
    "turn": "the turn's number in its session, from 1",
    "outcome": "ok, error, interrupted (a barge-in), cancelled (`response.cancel`), "
    "disconnected (the client left), shutdown (cut by the server's drain), transcribed (the "
    "transcript was the whole turn: a Realtime client that commits audio without asking for "
    "a reply)",
    "mode": "push_to_talk or hands_free",
    "audio_in_ms": "the user's audio in the turn",
    "stt_ms": "speech-to-text: from the end of the user's audio (or the start of the "
    "transcription) to the final transcript",
    "llm_first_token_ms": "the LLM request to its first text",
    "llm_ms": "the LLM request to its last text",
    "tts_first_audio_ms": "the first text-to-speech request to its first audio",
    "tts_ms": "the first text-to-speech request to the last audio",
    "voice_to_voice_ms": "the end of the turn to the first reply audio sent: push-to-talk "
    "from input_audio.stop received, hands-free from the detector's stop (after its silence "
    "window; make bench times hands-free from the end of speech)",
    "providers": "the provider of each stage: {stt, llm, tts} -> openai, openai-realtime, "
    "local or fake",
    "provider_requests": "the providers' ids of the turn's requests (stage and id), to quote "
    "to their support",
    "tools": "the turn's tool calls in order: name, runs_on (server or client), ok and ms",
    "speculative_replies": "replies started on the live transcript before the end of the turn "
    "was confirmed (VOICE_FSM_VAD__PREEMPTIVE_REPLY); each was adopted as the turn's reply or "
    "wasted",
    "wasted_replies": "of those, the ones cancelled (the user went on, or the final transcript "
    "said something else): each cost a language model request and speech",
    "wasted_llm_chars": "the text those cancelled requests had written (characters)",
    "wasted_speech_ms": "the audio their speech had synthesised, never sent",
    "code": "the error code, when the outcome is error",
    "stage": "the stage that failed, when the outcome is error",
    "level": "info",
    "timestamp": "ISO 8601, UTC",
}
"""Every field of a `turn.completed` line; timings are milliseconds, absent (null) where a
stage did not run. docs/observability.md is generated from this."""


@dataclass(frozen=True)
class TurnRecord:
    session_id: str
    turn: int
    outcome: str
    """ok, error, interrupted, cancelled, disconnected, shutdown or transcribed."""
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
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The turn's tool calls in order: name, runs_on, ok, ms."""
    speculation: dict[str, int] = field(default_factory=dict)
    """`SPECULATION_FIELDS` -> the turn's count (0 when it started no reply ahead)."""

    def log_fields(self) -> dict[str, Any]:
        """The `turn.completed` log line's fields (the logger adds session_id and turn)."""
        fields: dict[str, Any] = {"outcome": self.outcome, "mode": self.mode}
        fields.update(self.timings)
        fields["providers"] = self.providers
        fields["provider_requests"] = self.provider_requests
        if self.tools:
            fields["tools"] = self.tools
        fields.update({name: self.speculation.get(name, 0) for name in SPECULATION_FIELDS})
        if self.code is not None:
            fields["code"] = self.code
        if self.stage is not None:
            fields["stage"] = self.stage
        return fields


class TurnObserver(Protocol):
    def turn_ended(self, record: TurnRecord) -> None: ...


def record_of(
    turn: Turn,
    *,
    session_id: str,
    outcome: str,
    mode: str,
    providers: dict[str, str],
    code: str | None = None,
    stage: str | None = None,
    speculation: SpeculationStats | None = None,
) -> TurnRecord:
    """`turn`'s record, once it has ended."""
    return TurnRecord(
        session_id=session_id,
        turn=turn.number,
        outcome=outcome,
        mode=mode,
        providers=providers,
        timings=turn.metrics().model_dump(exclude={"type", "turn", "tools"}),
        tools=[timing.model_dump() for timing in turn.tool_timings],
        provider_requests=turn.provider_requests,
        code=code,
        stage=stage,
        marks=turn.clock.offsets("start"),
        speculation={}
        if speculation is None
        else {
            "speculative_replies": speculation.started,
            "wasted_replies": speculation.wasted,
            "wasted_llm_chars": speculation.wasted_llm_chars,
            "wasted_speech_ms": speculation.wasted_speech_ms,
        },
    )


def notify(observers: Sequence[TurnObserver], record: TurnRecord, log: Any) -> None:
    for observer in observers:
        try:
            observer.turn_ended(record)
        except Exception:  # an observer's bug must not cost the session its turn
            log.exception("turn_observer.failed", observer=type(observer).__name__)
