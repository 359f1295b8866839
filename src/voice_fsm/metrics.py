"""Prometheus metrics, served at `/metrics`: derived from each turn's `TurnRecord` (the same
record as the `turn.completed` log line), the live sessions and the embedded engines' lanes.

Each app owns one `Metrics` with its own registry, so two apps in one process (tests) never
share figures. The metrics, in seconds where they are times:

- `voice_fsm_voice_to_voice_seconds` (histogram; stt_provider, llm_provider, tts_provider, mode)
- `voice_fsm_stage_seconds` (histogram; stage, provider, mode): stage is stt, llm_first_token,
  llm, tts_first_audio or tts, provider the one that ran the stage
- `voice_fsm_turns_total` (counter; outcome, mode)
- `voice_fsm_errors_total` (counter; code, stage): turns that ended with outcome `error`
- `voice_fsm_provider_requests_total` (counter; stage, provider): the provider requests the
  turns made (those with an id, as in the log line's `provider_requests`)
- `voice_fsm_sessions` (gauge) and `voice_fsm_sessions_by_state` (gauge; state): read from the
  endpoint's live sessions at each scrape, so they cannot drift
- `voice_fsm_engine_queue_depth` (gauge; engine) and `voice_fsm_engine_queue_wait_seconds`
  (histogram; engine): callers waiting for an embedded engine's inference lane, and how long
  each waited
- `voice_fsm_tts_diverged_total` (counter; provider): pieces of speech whose provider said
  something other than the text it was given (`speech_fidelity`: a Realtime model that
  answered or paraphrased), each also a `tts.diverged` log line with both texts and the model
- `voice_fsm_speculative_replies_total` (counter; mode, fate: adopted or wasted): replies
  started on the live transcript before the turn's end was confirmed; what the wasted cost in
  `voice_fsm_speculation_wasted_llm_chars_total` and `..._wasted_speech_seconds_total`

The engines' lanes and the speech checks are the process's, not one app's: they are recorded
only while `watch_lanes` is on (the app's lifespan).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voice_fsm.adapters.local import runtime as local_runtime
from voice_fsm.adapters.openai import speech_fidelity
from voice_fsm.errors import ErrorCode, Stage
from voice_fsm.machine import HasState, count_states
from voice_fsm.turn_record import TurnRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST

# No `_created` series beside each counter and histogram: Prometheus does not use them in the
# text format, and they would double the series scraped. (A setting of prometheus-client's
# process-wide; this module is its only user.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

BUCKETS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10)
"""Seconds, for voice: from a quick stage (50 ms) to a very slow reply (10 s)."""

QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, *BUCKETS)
"""Seconds waited for an engine's lane: mostly none, so finer at the low end."""

STAGE_TIMINGS = (
    # (stage label, timing field, the pipeline stage whose provider ran it)
    ("stt", "stt_ms", "stt"),
    ("llm_first_token", "llm_first_token_ms", "llm"),
    ("llm", "llm_ms", "llm"),
    ("tts_first_audio", "tts_first_audio_ms", "tts"),
    ("tts", "tts_ms", "tts"),
)

OUTCOMES = ("ok", "error", "interrupted", "cancelled", "disconnected", "shutdown", "transcribed")
MODES = ("push_to_talk", "hands_free")
UNKNOWN = "unknown"


class SessionsCollector(Collector):
    """`voice_fsm_sessions` and `voice_fsm_sessions_by_state`, counted at scrape time."""

    def __init__(self, sessions: Callable[[], Collection[HasState]]) -> None:
        self._sessions = sessions

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("voice_fsm_sessions", "Live sessions")
        yield GaugeMetricFamily(
            "voice_fsm_sessions_by_state", "Live sessions per state", labels=["state"]
        )

    def collect(self) -> Iterator[Metric]:
        sessions = list(self._sessions())
        yield GaugeMetricFamily("voice_fsm_sessions", "Live sessions", value=len(sessions))
        by_state = GaugeMetricFamily(
            "voice_fsm_sessions_by_state", "Live sessions per state", labels=["state"]
        )
        counts = count_states(sessions)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state


class Metrics:
    """The metrics of one app: a turn observer and a lane watcher with its own registry.

    `sessions` gives the live sessions at scrape time; `providers` (stt, llm, tts -> provider),
    when known, creates the latency series at zero from the start, so that a rate over a window
    that begins before the first turn counts that turn too.
    """

    def __init__(
        self,
        sessions: Callable[[], Collection[HasState]] = tuple,
        providers: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.voice_to_voice = Histogram(
            "voice_fsm_voice_to_voice_seconds",
            "From the end of the turn (push-to-talk: input_audio.stop; hands-free: the "
            "detector's stop, after its silence window) to the first reply audio sent",
            ["stt_provider", "llm_provider", "tts_provider", "mode"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.stage = Histogram(
            "voice_fsm_stage_seconds",
            "Time of each stage of a turn, by the provider that ran it",
            ["stage", "provider", "mode"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.turns = Counter(
            "voice_fsm_turns", "Turns ended, by outcome", ["outcome", "mode"], registry=registry
        )
        for outcome in OUTCOMES:  # zeros from the start, so rates exist before the first turn
            for mode in MODES:
                self.turns.labels(outcome=outcome, mode=mode)
        self.errors = Counter(
            "voice_fsm_errors",
            "Turns that failed, by error code and the stage that failed",
            ["code", "stage"],
            registry=registry,
        )
        # Zeros too: a series born at 1 is invisible to rate() and increase(), so a dashboard
        # would miss the first error of each kind (60 series, each a few bytes).
        for code in ErrorCode:
            for failed in Stage:
                self.errors.labels(code=code.value, stage=failed.value)
        self.provider_requests = Counter(
            "voice_fsm_provider_requests",
            "Provider requests made by turns, by stage and provider",
            ["stage", "provider"],
            registry=registry,
        )
        # By name for the server's tools (the operator's list); a client's tools are all
        # "client": their names come from the network and would grow the series without end.
        self.tool_calls = Counter(
            "voice_fsm_tool_calls",
            "Tool calls made by turns, by tool and outcome (ok or the failure's kind)",
            ["name", "runs_on", "outcome"],
            registry=registry,
        )
        self.tool_seconds = Histogram(
            "voice_fsm_tool_seconds",
            "Time of each tool call, from the request to its result",
            ["name", "runs_on"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "voice_fsm_engine_queue_depth",
            "Callers waiting for an embedded engine's inference lane",
            ["engine"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "voice_fsm_engine_queue_wait_seconds",
            "Time a caller waited for an embedded engine's inference lane",
            ["engine"],
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.tts_diverged = Counter(
            "voice_fsm_tts_diverged",
            "Pieces of speech that said something other than their text (an answer or a "
            "paraphrase instead of a reading), by speech provider",
            ["provider"],
            registry=registry,
        )
        self.speculative = Counter(
            "voice_fsm_speculative_replies",
            "Replies started before the end of the turn was confirmed, adopted or wasted",
            ["mode", "fate"],
            registry=registry,
        )
        self.wasted_chars, self.wasted_speech = (
            Counter(f"voice_fsm_speculation_wasted_{name}", doc, ["mode"], registry=registry)
            for name, doc in (
                ("llm_chars", "Text written by the LLM requests of wasted speculative replies"),
                ("speech_seconds", "Audio synthesised for wasted speculative replies, never sent"),
            )
        )
        for mode in MODES:
            for fate in ("adopted", "wasted"):
                self.speculative.labels(mode=mode, fate=fate)
            self.wasted_chars.labels(mode=mode)
            self.wasted_speech.labels(mode=mode)
        self._stop_speech_checks: Callable[[], None] | None = None
        registry.register(SessionsCollector(sessions))
        if providers is not None:
            self.tts_diverged.labels(provider=providers.get("tts", UNKNOWN))
            for mode in MODES:
                self.voice_to_voice.labels(
                    stt_provider=providers.get("stt", UNKNOWN),
                    llm_provider=providers.get("llm", UNKNOWN),
                    tts_provider=providers.get("tts", UNKNOWN),
                    mode=mode,
                )
                for stage, _name, ran_by in STAGE_TIMINGS:
                    provider = providers.get(ran_by, UNKNOWN)
                    self.stage.labels(stage=stage, provider=provider, mode=mode)

    # -- the turn observer

    def turn_ended(self, record: TurnRecord) -> None:
        mode = record.mode
        providers = record.providers
        self.turns.labels(outcome=record.outcome, mode=mode).inc()
        if record.outcome == "error":
            self.errors.labels(code=record.code or UNKNOWN, stage=record.stage or UNKNOWN).inc()
        timings = record.timings
        voice_to_voice = timings.get("voice_to_voice_ms")
        if voice_to_voice is not None:
            self.voice_to_voice.labels(
                stt_provider=providers.get("stt", UNKNOWN),
                llm_provider=providers.get("llm", UNKNOWN),
                tts_provider=providers.get("tts", UNKNOWN),
                mode=mode,
            ).observe(voice_to_voice / 1000)
        for stage, name, ran_by in STAGE_TIMINGS:
            ms = timings.get(name)
            if ms is not None:
                provider = providers.get(ran_by, UNKNOWN)
                self.stage.labels(stage=stage, provider=provider, mode=mode).observe(ms / 1000)
        for tool in record.tools:
            runs_on = tool["runs_on"]
            name = tool["name"] if runs_on == "server" else "client"
            outcome = "ok" if tool["ok"] else tool.get("kind") or "failed"
            self.tool_calls.labels(name=name, runs_on=runs_on, outcome=outcome).inc()
            self.tool_seconds.labels(name=name, runs_on=runs_on).observe(tool["ms"] / 1000)
        spec = record.speculation
        if started := spec.get("speculative_replies", 0):
            wasted = spec.get("wasted_replies", 0)
            self.speculative.labels(mode=mode, fate="adopted").inc(started - wasted)
            self.speculative.labels(mode=mode, fate="wasted").inc(wasted)
            self.wasted_chars.labels(mode=mode).inc(spec.get("wasted_llm_chars", 0))
            self.wasted_speech.labels(mode=mode).inc(spec.get("wasted_speech_ms", 0) / 1000)
        for request in record.provider_requests:
            stage = request.get("stage", UNKNOWN)
            provider = providers.get(stage, UNKNOWN)
            self.provider_requests.labels(stage=stage, provider=provider).inc()

    # -- the lane watcher

    def lane_queue_depth(self, engine: str, depth: int) -> None:
        self.queue_depth.labels(engine=engine).set(depth)

    def lane_queue_wait(self, engine: str, seconds: float) -> None:
        self.queue_wait.labels(engine=engine).observe(seconds)

    def watch_lanes(self) -> None:
        """Start recording the embedded engines' queues and the speech checks' divergences
        (until `stop_watching_lanes`)."""
        if self not in local_runtime.watchers:
            local_runtime.watchers.append(self)
        if self._stop_speech_checks is None:
            self._stop_speech_checks = speech_fidelity.add_listener(self.speech_diverged)

    def stop_watching_lanes(self) -> None:
        if self in local_runtime.watchers:
            local_runtime.watchers.remove(self)
        stop, self._stop_speech_checks = self._stop_speech_checks, None
        if stop is not None:
            stop()

    # -- the speech checks

    def speech_diverged(self, divergence: speech_fidelity.Divergence) -> None:
        self.tts_diverged.labels(provider=divergence.provider or UNKNOWN).inc()

    # -- exposition

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
