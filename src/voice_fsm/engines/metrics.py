"""The engines' Prometheus metrics, and the bound on the requests each engine holds.

Each engine runs one inference at a time (its `InferenceLane`); the others wait in its queue:

- `voice_fsm_engine_queue_wait_seconds` (histogram; engine): how long each inference waited
  for its engine (0 when it was free), reported by the lanes themselves
- `voice_fsm_engine_queue_depth` (gauge; engine): inferences waiting for their engine now
- `voice_fsm_engine_busy` (gauge; engine): 1 while the engine runs a request
- `voice_fsm_engine_requests_in_progress` (gauge; engine): requests admitted and not finished
  (waiting, running, or sending their last bytes)
- `voice_fsm_engine_requests_total` (counter; engine, outcome): ok, error (the engine failed),
  invalid (an upload refused after its admission: not audio, say), refused (the engine had
  `max_waiting` requests waiting already: 429) or cancelled
- `voice_fsm_engine_request_seconds` (histogram; engine): from admission to the last byte
- `voice_fsm_engines_ready` (gauge): 1 once the models are loaded
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voice_fsm.adapters.local import runtime
from voice_fsm.engines.api_errors import ApiError
from voice_fsm.engines.loading import ENGINES, EngineName
from voice_fsm.metrics import BUCKETS, CONTENT_TYPE, QUEUE_BUCKETS

__all__ = ["CONTENT_TYPE", "Admission", "EngineMetrics"]

OUTCOMES = ("ok", "error", "invalid", "refused", "cancelled")


@dataclass
class Admission:
    """One admitted request of one engine; `finish` exactly once (later calls do nothing)."""

    metrics: EngineMetrics
    engine: EngineName
    started: float = field(default_factory=time.perf_counter)
    done: bool = False

    def finish(self, outcome: str) -> None:
        if self.done:
            return
        self.done = True
        self.metrics.finished(self, outcome)


class EngineMetrics(Collector):
    """A `LaneWatcher` of the engines' lanes, the request counts, and the admission bound."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.registry = CollectorRegistry()
        registry = self.registry
        self.queue_wait = Histogram(
            "voice_fsm_engine_queue_wait_seconds",
            "Time an inference waited for its engine (one inference at a time per engine)",
            ["engine"],
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "voice_fsm_engine_queue_depth",
            "Inferences waiting for their engine",
            ["engine"],
            registry=registry,
        )
        self.requests = Counter(
            "voice_fsm_engine_requests",
            "Requests to each engine, by outcome",
            ["engine", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "voice_fsm_engine_request_seconds",
            "Time of each request to an engine, from admission to its last byte",
            ["engine"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.ready = Gauge(
            "voice_fsm_engines_ready", "1 once the models are loaded", registry=registry
        )
        self.in_progress: dict[EngineName, int] = dict.fromkeys(ENGINES, 0)
        self.waiting: dict[str, int] = dict.fromkeys(ENGINES, 0)
        for engine in ENGINES:  # every series from the start, at zero
            self.queue_wait.labels(engine=engine)
            self.queue_depth.labels(engine=engine)
            self.seconds.labels(engine=engine)
            for outcome in OUTCOMES:
                self.requests.labels(engine=engine, outcome=outcome)
        registry.register(self)

    # -- admission

    def admit(self, engine: EngineName) -> Admission:
        """Admit a request to `engine`, or raise 429 when `max_waiting` already wait for it."""
        if self.in_progress[engine] > self.max_waiting:  # one running, max_waiting waiting
            self.requests.labels(engine=engine, outcome="refused").inc()
            raise ApiError(
                429,
                f"The {engine} engine is busy: {self.max_waiting} requests are waiting for it. "
                "Try again shortly.",
                kind="requests",
                code="engine_busy",
                headers={"Retry-After": "1"},
            )
        self.in_progress[engine] += 1
        return Admission(self, engine)

    def finished(self, admission: Admission, outcome: str) -> None:
        engine = admission.engine
        self.in_progress[engine] -= 1
        self.requests.labels(engine=engine, outcome=outcome).inc()
        self.seconds.labels(engine=engine).observe(time.perf_counter() - admission.started)

    # -- the lanes (runtime.LaneWatcher)

    def lane_queue_depth(self, engine: str, depth: int) -> None:
        self.waiting[engine] = depth
        self.queue_depth.labels(engine=engine).set(depth)

    def lane_queue_wait(self, engine: str, seconds: float) -> None:
        self.queue_wait.labels(engine=engine).observe(seconds)

    def watch_lanes(self) -> None:
        if self not in runtime.watchers:
            runtime.watchers.append(self)

    def stop_watching_lanes(self) -> None:
        if self in runtime.watchers:
            runtime.watchers.remove(self)

    # -- the gauges counted at scrape time (Collector)

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        busy = GaugeMetricFamily(
            "voice_fsm_engine_busy", "1 while the engine runs a request", labels=["engine"]
        )
        admitted = GaugeMetricFamily(
            "voice_fsm_engine_requests_in_progress",
            "Requests admitted to the engine and not finished",
            labels=["engine"],
        )
        for engine in ENGINES:
            count = self.in_progress[engine]
            busy.add_metric([engine], 1 if count > self.waiting.get(engine, 0) else 0)
            admitted.add_metric([engine], count)
        yield busy
        yield admitted

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
