"""OpenTelemetry traces of the turns, with the `otel` extra, exported over OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

Each `TurnRecord` becomes one trace: a `voice_fsm.turn` span, a child span per stage that ran
(`stt`, `llm`, `tts`) and, under its stage, a span per provider request with the id the
provider gave it. The spans are drawn from the record after the turn, from the same marks as
the `turn.completed` line, so a trace cannot disagree with the log: the turn's wall-clock
start is its `ended_at` less its last mark, and a provider request, which the record does not
time, spans its stage.

Off, nothing of OpenTelemetry is imported: `tracer_observer` looks at the environment first.
The SDK's own variables apply (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_TRACES_SAMPLER, OTEL_BSP_*).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from voice_fsm import __version__
from voice_fsm.logging_setup import get_logger
from voice_fsm.turn_record import TurnRecord

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.util.types import AttributeValue

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE_NAME = "voice-fsm"
STAGES = ("stt", "llm", "tts")
STAGE_EVENTS = {"llm": ("llm.first_token",), "tts": ("tts.first_audio",)}
"""Moments inside a stage, recorded as events of its span."""
TURN_EVENTS = ("stop", "first_audio_sent")
"""Moments of the turn itself (the user's audio ends; the first reply audio goes out)."""
GEN_AI_PROVIDERS = {"openai": "openai", "openai-realtime": "openai"}
"""Our provider names as the GenAI conventions' `gen_ai.provider.name` values."""


def tracing_requested() -> bool:
    """Whether the environment names an OTLP endpoint for traces."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def tracer_observer(
    stages: Mapping[str, Mapping[str, str]] | None = None,
    *,
    span_processor: SpanProcessor | None = None,
) -> TurnTracer | None:
    """A turn observer that traces each turn, or None when traces are off.

    `stages` is the pipeline's `describe()` (the models). Without `span_processor`, traces are
    on only with an OTLP endpoint in the environment and the `otel` extra installed, and go
    out through the SDK's batch processor and OTLP/HTTP exporter; tests pass their own.
    """
    if span_processor is None and not tracing_requested():
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        if span_processor is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            span_processor = BatchSpanProcessor(OTLPSpanExporter())
    except ImportError as err:
        get_logger().warning(
            "tracing.unavailable",
            detail=f"an OTLP endpoint is set but OpenTelemetry is missing ({err})",
            hint="pip install 'voice-fsm[otel]'",
        )
        return None
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service.
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(span_processor)
    get_logger().info("tracing.started", service=resource.attributes.get("service.name"))
    return TurnTracer(provider, stages or {})


class TurnTracer:
    """The turn observer: each finished turn becomes its spans."""

    def __init__(self, provider: TracerProvider, stages: Mapping[str, Mapping[str, str]]) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("voice_fsm", __version__)
        self._models = {name: info.get("model", "") for name, info in stages.items()}
        self._closed = False

    def turn_ended(self, record: TurnRecord) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        marks = record.marks
        end = _ns(record.ended_at)
        origin = end - _ns(max(marks.values(), default=0.0))

        def at(mark: str) -> int:
            return origin + _ns(marks[mark])

        turn = self._tracer.start_span(
            "voice_fsm.turn",
            kind=SpanKind.SERVER,
            start_time=origin,
            attributes=_turn_attributes(record),
        )
        for mark in TURN_EVENTS:
            if mark in marks:
                turn.add_event(mark, timestamp=at(mark))
        if record.outcome == "error" and record.code is not None:
            turn.set_status(Status(StatusCode.ERROR, record.code))
        context = trace.set_span_in_context(turn)
        for stage in STAGES:
            if f"{stage}.start" in marks:
                stage_end = at(f"{stage}.end") if f"{stage}.end" in marks else end
                self._stage(record, stage, at(f"{stage}.start"), stage_end, context, at)
        turn.end(end_time=end)

    def _stage(
        self,
        record: TurnRecord,
        stage: str,
        start: int,
        end: int,
        context: Context,
        at: Callable[[str], int],
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        provider = record.providers.get(stage, "")
        span = self._tracer.start_span(
            stage,
            context=context,
            start_time=start,
            attributes=self._stage_attributes(record, stage, provider),
        )
        for mark in STAGE_EVENTS.get(stage, ()):
            if mark in record.marks:
                span.add_event(mark, timestamp=at(mark))
        if record.outcome == "error" and record.stage == stage and record.code is not None:
            span.set_status(Status(StatusCode.ERROR, record.code))
        inside = trace.set_span_in_context(span)
        for request in record.provider_requests:
            if request.get("stage") == stage and request.get("id"):
                self._tracer.start_span(
                    f"{stage}.request",
                    context=inside,
                    kind=SpanKind.CLIENT,
                    start_time=start,
                    attributes={
                        "voice_fsm.request.id": request["id"],
                        "voice_fsm.stage": stage,
                        "voice_fsm.provider": provider,
                    },
                ).end(end_time=end)
        span.end(end_time=end)

    def _stage_attributes(
        self, record: TurnRecord, stage: str, provider: str
    ) -> dict[str, AttributeValue]:
        model = self._models.get(stage, "")
        attributes: dict[str, AttributeValue] = {"voice_fsm.stage": stage}
        if provider:
            attributes["voice_fsm.provider"] = provider
        if model:
            attributes["voice_fsm.model"] = model
        if stage == "llm":
            system = GEN_AI_PROVIDERS.get(provider, provider)
            attributes["gen_ai.operation.name"] = "chat"
            # gen_ai.provider.name replaced gen_ai.system; backends still read either.
            attributes["gen_ai.provider.name"] = system
            attributes["gen_ai.system"] = system
            if model:
                attributes["gen_ai.request.model"] = model
        if record.outcome == "error" and record.stage == stage and record.code is not None:
            attributes["error.type"] = record.code
        return attributes

    def shutdown(self) -> None:
        """Send what is still queued and stop (the app's shutdown)."""
        if not self._closed:
            self._closed = True
            self.provider.shutdown()
            get_logger().info("tracing.stopped")


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _turn_attributes(record: TurnRecord) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "session.id": record.session_id,
        "voice_fsm.turn": record.turn,
        "voice_fsm.outcome": record.outcome,
        "voice_fsm.mode": record.mode,
    }
    for stage, provider in record.providers.items():
        attributes[f"voice_fsm.{stage}.provider"] = provider
    for name, value in record.timings.items():
        if value is not None:
            attributes[f"voice_fsm.{name}"] = value
    if record.outcome == "error" and record.code is not None:
        attributes["error.type"] = record.code
        if record.stage is not None:
            attributes["voice_fsm.error.stage"] = record.stage
    return attributes
