"""OpenTelemetry traces: one trace per turn, drawn from its `TurnRecord`; nothing of
OpenTelemetry imported when traces are off or the `otel` extra is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from voice_fsm.adapters.fake import FakeLanguageModel
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import InputAudioStart, InputAudioStop, ResponseCancel
from voice_fsm.providers import Pipeline, build_pipeline
from voice_fsm.settings import LlmSettings, Settings, SttSettings, TtsSettings
from voice_fsm.testing import FakeOpenAIConfig
from voice_fsm.tracing import TurnTracer, tracer_observer
from voice_fsm.turn_record import TurnRecord

from conftest import ClientFactory
from session_harness import fake_pipeline
from support.servers import (
    QUICK_FAKES,
    console_script,
    eventually,
    fake_env,
    free_port,
    run_talk,
    running_server,
    stop_process,
)

START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")
CANCEL = ResponseCancel(type="response.cancel")
MS = 1_000_000  # nanoseconds


@dataclass
class Traced:
    """A tracer writing to the SDK's in-memory exporter, and the records it was given."""

    tracer: TurnTracer
    exporter: Any
    records: list[TurnRecord] = field(default_factory=list)

    def turn_ended(self, record: TurnRecord) -> None:
        self.records.append(record)

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def traced() -> Iterator[Any]:
    """`traced(stages)`: a `Traced` for a pipeline's `describe()`."""
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    made: list[Traced] = []

    def make(stages: dict[str, dict[str, str]]) -> Traced:
        exporter = InMemorySpanExporter()
        tracer = tracer_observer(stages, span_processor=SimpleSpanProcessor(exporter))
        assert tracer is not None
        made.append(Traced(tracer, exporter))
        return made[-1]

    yield make
    for one in made:
        one.tracer.shutdown()


def openai_everywhere(base_url: str) -> Settings:
    """All three stages on the fake OpenAI HTTP API (its request ids in `x-request-id`); no
    live transcription, whose first try at a base URL would be a request of its own."""
    return Settings(
        _env_file=None,
        openai_api_key=SecretStr("sk-proj-abc123DEF456ghi789"),
        openai_base_url=base_url,
        stt=SttSettings(provider="openai", max_retries=0, live=False),
        llm=LlmSettings(provider="openai", max_retries=0),
        tts=TtsSettings(provider="openai", max_retries=0),
    )


@pytest.fixture
async def openai_pipeline(
    fake_openai: tuple[FakeOpenAIConfig, str],
) -> AsyncIterator[tuple[FakeOpenAIConfig, Pipeline]]:
    """A pipeline with all three stages on the fake OpenAI HTTP API, closed after the test."""
    config, base_url = fake_openai
    pipeline = build_pipeline(openai_everywhere(base_url))
    yield config, pipeline
    await pipeline.aclose()


def one(spans: Sequence[Any], name: str) -> Any:
    (span,) = [span for span in spans if span.name == name]
    return span


def ms(span: Any) -> float:
    return float(span.end_time - span.start_time) / MS


async def test_a_turn_is_one_trace_with_its_stages_and_provider_requests(
    connect: ClientFactory, openai_pipeline: tuple[FakeOpenAIConfig, Pipeline], traced: Any
) -> None:
    config, pipeline = openai_pipeline
    stages = pipeline.describe()
    trace = traced(stages)
    client = await connect(pipeline, observers=[trace, trace.tracer])
    await client.send(START)
    await client.speak(500)
    await client.send(STOP)
    await client.until("turn.metrics")
    await eventually(lambda: trace.records)
    (record,) = trace.records
    assert record.outcome == "ok"
    spans = trace.spans()

    turn, stt, llm, tts = (one(spans, name) for name in ("voice_fsm.turn", "stt", "llm", "tts"))
    assert turn.parent is None
    assert turn.kind.name == "SERVER"
    for stage in (stt, llm, tts):
        assert stage.parent.span_id == turn.context.span_id
        assert stage.context.trace_id == turn.context.trace_id
        assert turn.start_time <= stage.start_time <= stage.end_time <= turn.end_time
    assert turn.end_time == round(record.ended_at * 1e9)
    # The stages in order, timed as the record times them (its milliseconds are rounded).
    assert stt.start_time < stt.end_time <= llm.start_time < tts.start_time
    for span, name in ((stt, "stt_ms"), (llm, "llm_ms"), (tts, "tts_ms")):
        assert abs(ms(span) - record.timings[name]) <= 1, name
    (first_token,) = llm.events
    assert first_token.name == "llm.first_token"
    assert (
        abs((first_token.timestamp - llm.start_time) / MS - record.timings["llm_first_token_ms"])
        <= 1
    )
    (first_audio,) = tts.events
    assert first_audio.name == "tts.first_audio"
    assert [event.name for event in turn.events] == ["stop", "first_audio_sent"]
    voice_to_voice = (turn.events[1].timestamp - turn.events[0].timestamp) / MS
    assert abs(voice_to_voice - record.timings["voice_to_voice_ms"]) <= 1

    assert dict(turn.attributes) == {
        "session.id": client.session.id,
        "voice_fsm.turn": 1,
        "voice_fsm.outcome": "ok",
        "voice_fsm.mode": "push_to_talk",
        "voice_fsm.stt.provider": "openai",
        "voice_fsm.llm.provider": "openai",
        "voice_fsm.tts.provider": "openai",
        **{f"voice_fsm.{name}": value for name, value in record.timings.items()},
    }
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.provider.name"] == llm.attributes["gen_ai.system"] == "openai"
    assert llm.attributes["gen_ai.request.model"] == stages["llm"]["model"]
    assert stt.attributes["voice_fsm.model"] == stages["stt"]["model"]
    assert turn.status.status_code.name == "UNSET"

    # A span per provider request, under its stage, by the id the provider gave it.
    stage_spans = {"stt": stt, "llm": llm, "tts": tts}
    requests = [span for span in spans if span.name.endswith(".request")]
    expected = [("stt", request.request_id) for request in config.received("transcriptions")] + [
        ("llm", request.request_id) for request in config.received("chat")
    ]
    expected += [("tts", request.request_id) for request in config.received("speech")]
    assert len(expected) >= 3
    assert [
        (span.attributes["voice_fsm.stage"], span.attributes["voice_fsm.request.id"])
        for span in requests
    ] == expected
    assert [(r["stage"], r["id"]) for r in record.provider_requests] == expected
    for span in requests:
        parent = stage_spans[span.attributes["voice_fsm.stage"]]
        assert span.parent.span_id == parent.context.span_id
        assert span.kind.name == "CLIENT"
    assert len(spans) == 4 + len(requests)


async def test_a_failed_turn_is_an_error_on_the_turn_and_its_stage(
    connect: ClientFactory, traced: Any
) -> None:
    error = ProviderError(ErrorCode.PROVIDER_RATE_LIMITED, "slow down", stage=Stage.LLM)
    pipeline = fake_pipeline(llm=FakeLanguageModel(fail=error, fail_after_tokens=2))
    trace = traced(pipeline.describe())
    client = await connect(pipeline, observers=[trace, trace.tracer])
    await client.send(START)
    await client.speak(200)
    await client.send(STOP)
    await client.until("error")
    await eventually(lambda: trace.records)
    (record,) = trace.records
    assert (record.outcome, record.code, record.stage) == ("error", "provider-rate-limited", "llm")
    spans = trace.spans()
    turn, stt, llm = (one(spans, name) for name in ("voice_fsm.turn", "stt", "llm"))
    assert (turn.status.status_code.name, turn.status.description) == (
        "ERROR",
        "provider-rate-limited",
    )
    assert turn.attributes["error.type"] == "provider-rate-limited"
    assert turn.attributes["voice_fsm.error.stage"] == "llm"
    assert turn.attributes["voice_fsm.outcome"] == "error"
    assert llm.status.status_code.name == "ERROR"
    assert llm.attributes["error.type"] == "provider-rate-limited"
    assert llm.attributes["gen_ai.provider.name"] == "fake"
    assert stt.status.status_code.name == "UNSET"
    assert "error.type" not in stt.attributes
    # The failed stage has no end mark: it lasts until the turn ends.
    assert llm.end_time == turn.end_time
    assert llm.parent.span_id == turn.context.span_id


async def test_a_cancelled_recording_is_a_turn_without_stages(
    connect: ClientFactory, traced: Any
) -> None:
    pipeline = fake_pipeline()
    trace = traced(pipeline.describe())
    client = await connect(pipeline, observers=[trace, trace.tracer])
    await client.send(START)
    await client.speak(120)
    await client.send(CANCEL)
    await client.until("state", state="idle")
    await eventually(lambda: trace.records)
    (turn,) = trace.spans()
    assert turn.name == "voice_fsm.turn"
    assert turn.attributes["voice_fsm.outcome"] == "cancelled"
    assert turn.status.status_code.name == "UNSET"
    assert "voice_fsm.voice_to_voice_ms" not in turn.attributes


# ---------------------------------------------------------------- the app, with and without


APP = """
import importlib.abc, json, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

if sys.argv[1] == "block":
    sys.meta_path.insert(0, Blocker())

from starlette.testclient import TestClient
from voice_fsm.app import create_app
from voice_fsm.settings import Settings

app = create_app(Settings(_env_file=None))
with TestClient(app) as client:
    with client.websocket_connect("/ws") as ws:
        created = ws.receive_json()
    health = client.get("/healthz").json()
print(json.dumps({
    "health": health["status"],
    "session": created["type"],
    "tracer": type(app.state.tracer).__name__,
    "otel": sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"),
}))
"""


def build_app(mode: str, tmp_path: Path, **env: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-c", APP, mode],
        env=fake_env(**QUICK_FAKES, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *logs, result = done.stdout.strip().splitlines()
    return json.loads(result), "\n".join(logs) + done.stderr


def test_without_an_endpoint_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    # The SDK is installed here: only the missing endpoint keeps it out.
    result, _ = build_app("open", tmp_path)
    assert result == {
        "health": "ok",
        "session": "session.created",
        "tracer": "NoneType",
        "otel": [],
    }


def test_without_the_extra_an_endpoint_only_warns(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    result, logs = build_app("block", tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=unreachable)
    assert result == {
        "health": "ok",
        "session": "session.created",
        "tracer": "NoneType",
        "otel": [],
    }
    assert "tracing.unavailable" in logs
    assert "voice-fsm[otel]" in logs


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_with_the_extra_and_an_endpoint_the_app_traces(tmp_path: Path, variable: str) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    unreachable = f"http://127.0.0.1:{free_port()}"
    result, logs = build_app("open", tmp_path, **{variable: unreachable + "/v1/traces"})
    assert result["tracer"] == "TurnTracer"
    assert "opentelemetry.sdk.trace" in result["otel"]
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in result["otel"]
    assert "tracing.started" in logs


# ---------------------------------------------------------------- a real server, a real collector


@contextmanager
def otlp_collector() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP receiver on a loopback port: its base URL, and the bodies of the
    `/v1/traces` requests it got."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def received_spans(bodies: list[bytes]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span the collector got."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for body in bodies:
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans += [(resource, span) for span in scope_spans.spans]
    return spans


def attribute(span: Any, key: str) -> Any:
    (value,) = [kv.value for kv in span.attributes if kv.key == key]
    return getattr(value, value.WhichOneof("value"))


def turn_lines(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "turn.completed"]


@pytest.mark.integration
def test_a_served_turn_reaches_the_collector_when_the_server_stops(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    port = free_port()
    log = tmp_path / "server.log"
    with otlp_collector() as (endpoint, bodies):
        # Nothing is sent on a schedule within the test: the spans go out at shutdown.
        env = fake_env(
            **QUICK_FAKES, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="600000"
        )
        with running_server(
            [console_script(), "serve", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            env=env,
            cwd=tmp_path,
            log=log,
        ) as server:
            done = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws")
            assert done.returncode == 0, done.stderr
            assert bodies == []
            assert stop_process(server) == 0
        spans = received_spans(bodies)
    summary = json.loads(done.stdout)
    (line,) = turn_lines(log)
    assert line["outcome"] == "ok"
    assert sorted(span.name for _, span in spans) == ["llm", "stt", "tts", "voice_fsm.turn"]
    resource, turn = next((r, s) for r, s in spans if s.name == "voice_fsm.turn")
    assert resource["service.name"] == "voice-fsm"
    assert attribute(turn, "session.id") == summary["session_id"] == line["session_id"]
    assert attribute(turn, "voice_fsm.voice_to_voice_ms") == line["voice_to_voice_ms"]
    assert {span.trace_id for _, span in spans} == {turn.trace_id}
    # The app's shutdown flushed them, before it stopped.
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line[:1] == "{"]
    assert events.index("tracing.stopped") < events.index("server.stopped")


@pytest.mark.integration
def test_an_unreachable_collector_costs_no_turn(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    port = free_port()
    log = tmp_path / "server.log"
    env = fake_env(
        **QUICK_FAKES,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        OTEL_BSP_SCHEDULE_DELAY="50",  # exports are attempted (and fail) while turns run
        OTEL_SERVICE_NAME="voice-fsm-test",
    )
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=tmp_path,
        log=log,
    ) as server:
        for _ in range(2):
            done = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["error"] is None
        assert stop_process(server) == 0
    assert [line["outcome"] for line in turn_lines(log)] == ["ok", "ok"]
    text = log.read_text()
    assert '"service": "voice-fsm-test"' in text or '"service":"voice-fsm-test"' in text
    assert "server.stopped" in text
