"""`/metrics` of a real `voice-fsm serve`, read with prometheus_client's own parser, against the
turns' `turn.completed` lines and `turn.metrics` events; who may read it; the engines' lanes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.testclient import TestClient

from voice_fsm.adapters.fake import FakeLanguageModel
from voice_fsm.adapters.local.runtime import InferenceLane, StopFlag, watchers
from voice_fsm.adapters.openai import speech_fidelity
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.realtime_tts import OpenAIRealtimeTextToSpeech
from voice_fsm.app import create_app
from voice_fsm.audio import bytes_for_ms
from voice_fsm.machine import State
from voice_fsm.metrics import BUCKETS, STAGE_TIMINGS, Metrics
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.turn_record import TurnRecord

from session_harness import fake_pipeline
from support.openai_wire import openai_settings
from support.prometheus import FakeServer, Turns, fake_server, take_turns, voice_client
from support.servers import eventually_sync

KEY = "sk-metrics-test-0123456789"


def scrape(url: str, **headers: str) -> list[Sample]:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    # Prometheus's text format (prometheus-client's latest version of it), not OpenMetrics.
    assert response.headers["content-type"].startswith("text/plain; version=")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by_labels(samples: list[Sample], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """`name`'s non-zero samples, by the values of the labels `keys`."""
    found: Counter[tuple[str, ...]] = Counter()
    for s in samples:
        if s.name == name and s.value:
            found[tuple(s.labels[k] for k in keys)] += s.value
    return dict(found)


# ---------------------------------------------------------------- a real server, real turns


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeServer, Turns]]:
    with fake_server(tmp_path_factory.mktemp("metrics")) as server:
        yield server, take_turns(server.ws_url, ok=5, failing=1)


@pytest.mark.integration
def test_metrics_follow_the_turns(served: tuple[FakeServer, Turns]) -> None:
    server, turns = served
    lines = server.turn_lines()
    assert len(lines) == 6
    assert (len(turns.metrics), len(turns.errors)) == (5, 1)
    samples = scrape(server.url)

    # Turns by outcome and mode: exactly the turn.completed lines (zeros included).
    outcomes = Counter((line["outcome"], line["mode"]) for line in lines)
    assert outcomes == {("ok", "push_to_talk"): 5, ("error", "push_to_talk"): 1}
    assert by_labels(samples, "voice_fsm_turns_total", "outcome", "mode") == outcomes

    # Errors by code and stage: the failing turn's.
    failed = Counter((line["code"], line["stage"]) for line in lines if line["outcome"] == "error")
    assert failed == {("no-audio", "input"): 1}
    assert (turns.errors[0]["code"], turns.errors[0]["stage"]) == ("no-audio", "input")
    assert by_labels(samples, "voice_fsm_errors_total", "code", "stage") == failed

    # Provider requests: the fake providers make none with an id, and none are counted.
    noted = Counter(r["stage"] for line in lines for r in line["provider_requests"])
    assert by_labels(samples, "voice_fsm_provider_requests_total", "stage") == noted

    # Each histogram: one observation per turn that had the stage (the failing turn had
    # none), in the buckets its turn.metrics figure falls in, summing to the same seconds.
    histograms = [("voice_fsm_voice_to_voice_seconds", "voice_to_voice_ms", {})]
    histograms += [
        ("voice_fsm_stage_seconds", name, {"stage": stage, "provider": "fake"})
        for stage, name, _ in STAGE_TIMINGS
    ]
    for metric, name, labels in histograms:
        in_lines = [line[name] for line in lines if line[name] is not None]
        figures = turns.values_ms(name)
        assert sorted(figures) == sorted(in_lines), name  # the event and the log line agree
        assert len(figures) == 5, name
        assert value(samples, f"{metric}_count", **labels) == len(figures), name
        assert value(samples, f"{metric}_sum", **labels) == pytest.approx(
            sum(figures) / 1000, abs=1e-6
        ), name
        for bound in (*BUCKETS, float("inf")):
            le = "+Inf" if bound == float("inf") else str(float(bound))
            expected = sum(1 for ms in figures if ms / 1000 <= bound)
            got = value(samples, f"{metric}_bucket", le=le, **labels)
            assert got == expected, f"{metric}{labels} le={le}: {got} != {expected} ({figures})"
    # The stages ran by the fake providers' delays: the buckets tell them apart.
    stage_sums = {
        stage: value(samples, "voice_fsm_stage_seconds_sum", stage=stage)
        for stage, _, _ in STAGE_TIMINGS
    }
    assert stage_sums["llm_first_token"] > stage_sums["stt"] > stage_sums["tts_first_audio"]

    # Nobody is connected any more: no live session, in any state.
    def gauges() -> tuple[float, dict[str, float]]:
        now = scrape(server.url)
        states = {
            s.labels["state"]: s.value for s in now if s.name == "voice_fsm_sessions_by_state"
        }
        return value(now, "voice_fsm_sessions"), states

    eventually_sync(lambda: gauges()[0] == 0, seconds=5)
    assert gauges() == (0, {state.value: 0 for state in State})


@pytest.mark.integration
def test_the_session_gauges_follow_a_connected_client(served: tuple[FakeServer, Turns]) -> None:
    server, _ = served

    def states() -> dict[str, float]:
        now = scrape(server.url)
        counts = {
            s.labels["state"]: s.value for s in now if s.name == "voice_fsm_sessions_by_state"
        }
        counts["live"] = value(now, "voice_fsm_sessions")
        return {k: v for k, v in counts.items() if v}

    eventually_sync(lambda: not states(), seconds=5)  # the other test's client has left
    with voice_client(server.ws_url) as client:
        assert states() == {"live": 1, "idle": 1}
        client.start()
        assert states() == {"live": 1, "recording": 1}
    eventually_sync(lambda: not states(), seconds=5)


# ---------------------------------------------------------------- who may read it


def app_settings(**groups: dict[str, Any]) -> Settings:
    return Settings(_env_file=None, openai_api_key=None, **groups)  # type: ignore[call-arg]


def get_metrics(settings: Settings, **headers: str) -> httpx.Response:
    app = create_app(settings, pipeline=fake_pipeline())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        return client.get("/metrics", headers=headers)


def test_metrics_need_the_key_when_keys_are_set() -> None:
    settings = app_settings(auth={"api_keys": [KEY]})
    assert get_metrics(settings).status_code == 401
    assert get_metrics(settings, authorization="Bearer sk-wrong").status_code == 401
    answer = get_metrics(settings, authorization=f"Bearer {KEY}")
    assert answer.status_code == 200
    assert "voice_fsm_turns_total" in answer.text


def test_public_metrics_need_no_key_but_the_rest_still_does() -> None:
    settings = app_settings(auth={"api_keys": [KEY]}, metrics={"public": True})
    assert get_metrics(settings).status_code == 200
    app = create_app(settings, pipeline=fake_pipeline())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/").status_code == 401


def test_metrics_off_means_no_route_and_no_observer() -> None:
    settings = app_settings(metrics={"enabled": False})
    assert get_metrics(settings).status_code == 404
    app = create_app(settings, pipeline=fake_pipeline())
    assert app.state.metrics is None
    assert not any(isinstance(o, Metrics) for o in app.state.endpoint.observers)
    on = create_app(app_settings(), pipeline=fake_pipeline())
    assert any(o is on.state.metrics for o in on.state.endpoint.observers)


# ---------------------------------------------------------------- the record, directly


def test_provider_requests_are_counted_by_the_stage_and_its_provider() -> None:
    metrics = Metrics()
    metrics.turn_ended(
        TurnRecord(
            session_id="s",
            turn=1,
            outcome="ok",
            mode="hands_free",
            providers={"stt": "openai-realtime", "llm": "openai", "tts": "local"},
            timings={"stt_ms": 120, "llm_ms": None, "voice_to_voice_ms": 640},
            provider_requests=[
                {"stage": "stt", "id": "item_1"},
                {"stage": "llm", "id": "req_1"},
                {"stage": "llm", "id": "req_2"},
            ],
        )
    )
    get = metrics.registry.get_sample_value
    assert get("voice_fsm_provider_requests_total", {"stage": "llm", "provider": "openai"}) == 2
    stt = {"stage": "stt", "provider": "openai-realtime"}
    assert get("voice_fsm_provider_requests_total", stt) == 1
    assert get("voice_fsm_stage_seconds_count", {**stt, "mode": "hands_free"}) == 1
    assert get("voice_fsm_stage_seconds_sum", {**stt, "mode": "hands_free"}) == 0.12
    assert get("voice_fsm_stage_seconds_count", {"stage": "llm", "provider": "openai"}) is None
    v2v = {"stt_provider": "openai-realtime", "llm_provider": "openai", "tts_provider": "local"}
    assert (
        get("voice_fsm_voice_to_voice_seconds_bucket", {**v2v, "mode": "hands_free", "le": "0.5"})
        == 0
    )
    assert (
        get("voice_fsm_voice_to_voice_seconds_bucket", {**v2v, "mode": "hands_free", "le": "0.75"})
        == 1
    )
    assert get("voice_fsm_turns_total", {"outcome": "ok", "mode": "hands_free"}) == 1
    assert get("voice_fsm_errors_total", {"code": "unknown", "stage": "unknown"}) is None


def test_speculative_replies_show_at_zero_then_count_what_was_wasted() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    for mode in ("push_to_talk", "hands_free"):  # from the start, before any turn
        for fate in ("adopted", "wasted"):
            assert get("voice_fsm_speculative_replies_total", {"mode": mode, "fate": fate}) == 0
        assert get("voice_fsm_speculation_wasted_llm_chars_total", {"mode": mode}) == 0
        assert get("voice_fsm_speculation_wasted_speech_seconds_total", {"mode": mode}) == 0
    # A turn whose first reply (started on a pause) was cancelled and the second adopted.
    metrics.turn_ended(
        TurnRecord(
            session_id="s",
            turn=1,
            outcome="ok",
            mode="hands_free",
            providers={},
            timings={},
            speculation={
                "speculative_replies": 2,
                "wasted_replies": 1,
                "wasted_llm_chars": 40,
                "wasted_speech_ms": 1500,
            },
        )
    )
    hands_free = {"mode": "hands_free"}
    assert get("voice_fsm_speculative_replies_total", {**hands_free, "fate": "adopted"}) == 1
    assert get("voice_fsm_speculative_replies_total", {**hands_free, "fate": "wasted"}) == 1
    assert get("voice_fsm_speculation_wasted_llm_chars_total", hands_free) == 40
    assert get("voice_fsm_speculation_wasted_speech_seconds_total", hands_free) == 1.5
    fields = TurnRecord(
        session_id="s", turn=2, outcome="ok", mode="push_to_talk", providers={}, timings={}
    ).log_fields()
    assert {k: fields[k] for k in ("speculative_replies", "wasted_replies")} == {
        "speculative_replies": 0,
        "wasted_replies": 0,
    }  # in every turn.completed line, zeros included


def test_tool_calls_are_counted_by_tool_and_outcome_and_client_tools_under_one_name() -> None:
    metrics = Metrics()
    tools = [
        {"name": "get_weather", "runs_on": "server", "ok": True, "kind": None, "ms": 212},
        {"name": "get_weather", "runs_on": "server", "ok": False, "kind": "timeout", "ms": 500},
        {"name": "open_door_x7", "runs_on": "client", "ok": True, "kind": None, "ms": 40},
    ]
    record = TurnRecord(
        session_id="s",
        turn=1,
        outcome="ok",
        mode="push_to_talk",
        providers={"stt": "openai", "llm": "openai", "tts": "openai"},
        timings={"voice_to_voice_ms": 900},
        tools=tools,
    )
    metrics.turn_ended(record)
    get = metrics.registry.get_sample_value
    weather = {"name": "get_weather", "runs_on": "server"}
    assert get("voice_fsm_tool_calls_total", {**weather, "outcome": "ok"}) == 1
    assert get("voice_fsm_tool_calls_total", {**weather, "outcome": "timeout"}) == 1
    assert get("voice_fsm_tool_seconds_sum", weather) == 0.712
    client = {"name": "client", "runs_on": "client"}
    assert get("voice_fsm_tool_calls_total", {**client, "outcome": "ok"}) == 1
    text = metrics.exposition().decode()
    assert "open_door_x7" not in text  # a client's names never become series
    assert record.log_fields()["tools"] == tools


# ---------------------------------------------------------------- the engines' lanes


async def test_a_lane_reports_its_queue_to_the_metrics_only_while_watched() -> None:
    metrics = Metrics()
    lane = InferenceLane("whisper", concurrency=1)
    release = threading.Event()

    def blocking(_stop: StopFlag) -> str:
        release.wait(5)
        return "done"

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"engine": "whisper"})

    metrics.watch_lanes()
    try:
        first = asyncio.create_task(lane.run(blocking))
        second = asyncio.create_task(lane.run(blocking))
        await asyncio.sleep(0.05)
        assert sample("voice_fsm_engine_queue_depth") == 1  # the second waits for the first
        release.set()
        assert await asyncio.gather(first, second) == ["done", "done"]
        assert sample("voice_fsm_engine_queue_depth") == 0
        assert sample("voice_fsm_engine_queue_wait_seconds_count") == 2
        waited = sample("voice_fsm_engine_queue_wait_seconds_sum")
        # The second waited while the first ran, which it did until after the 50 ms sleep.
        assert waited is not None
        assert waited >= 0.04
        streamed = [item async for item in lane.stream(lambda _stop: iter((1, 2)))]
        assert streamed == [1, 2]
        assert sample("voice_fsm_engine_queue_wait_seconds_count") == 3
    finally:
        metrics.stop_watching_lanes()
    assert metrics not in watchers
    assert await lane.run(lambda _stop: "unwatched") == "unwatched"
    assert sample("voice_fsm_engine_queue_wait_seconds_count") == 3


# ---------------------------------------------------------------- speech that diverged

SPOKEN_KEY = "sk-proj-metrics-speech0123456789"
WRITTEN = "The capital of France is Paris."
DIVERGED = {"provider": "openai-realtime"}


def speech_turns(realtime_server: tuple[FakeRealtimeConfig, str], turns: int) -> str:
    """`turns` turns on an app whose speech is the Realtime text-to-speech on the fake
    Realtime server; the app's /metrics after them."""
    settings = openai_settings("tts", base_url=realtime_server[1], key=SPOKEN_KEY, timeout=2.0)
    tts = OpenAIRealtimeTextToSpeech(
        settings.tts, make_openai_client(settings, settings.tts), settings.secrets()
    )
    pipeline = fake_pipeline(llm=FakeLanguageModel(WRITTEN), tts=tts)
    app = create_app(app_settings(), pipeline=pipeline)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/metrics").status_code == 200
        with client.websocket_connect("/ws") as ws:
            for _ in range(turns):
                ws.send_json({"type": "input_audio.start"})
                ws.send_bytes(b"\x10\x00" * (bytes_for_ms(400) // 2))
                ws.send_json({"type": "input_audio.stop"})
                while True:
                    message = ws.receive()
                    event = json.loads(message["text"]) if message.get("text") else {}
                    assert event.get("type") != "error", event
                    if event.get("type") == "turn.metrics":
                        break
        return client.get("/metrics").text


def samples_of(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_speech_that_said_something_else_is_counted_by_its_provider(
    realtime_server: tuple[FakeRealtimeConfig, str],
) -> None:
    fake = realtime_server[0]
    fake.reset(api_key=SPOKEN_KEY, tts_first_audio_delay=0.0, tts_chunk_delay=0.0)
    fake.paraphrase = lambda text: "Paris, naturally: everyone knows the city of light."
    samples = samples_of(speech_turns(realtime_server, turns=2))
    assert value(samples, "voice_fsm_tts_diverged_total", **DIVERGED) == 2
    assert value(samples, "voice_fsm_turns_total", outcome="ok") == 2
    assert not speech_fidelity._listeners  # the app's lifespan took its listener with it


def test_speech_read_as_written_is_not_counted_but_shows_from_the_start(
    realtime_server: tuple[FakeRealtimeConfig, str],
) -> None:
    fake = realtime_server[0]
    fake.reset(api_key=SPOKEN_KEY, tts_first_audio_delay=0.0, tts_chunk_delay=0.0)
    samples = samples_of(speech_turns(realtime_server, turns=1))
    [series] = [s for s in samples if s.name == "voice_fsm_tts_diverged_total"]
    assert (series.labels, series.value) == (DIVERGED, 0)
    assert value(samples, "voice_fsm_turns_total", outcome="ok") == 1


def test_divergences_are_counted_only_while_the_metrics_watch() -> None:
    metrics = Metrics(providers={"stt": "fake", "llm": "fake", "tts": "openai-realtime"})

    def diverged() -> float | None:
        return metrics.registry.get_sample_value("voice_fsm_tts_diverged_total", DIVERGED)

    said = "Paris, naturally: everyone knows the city of light."
    assert diverged() == 0
    speech_fidelity.check(WRITTEN, said, provider="openai-realtime", model="gpt-realtime")
    assert diverged() == 0  # not watching yet
    metrics.watch_lanes()
    try:
        speech_fidelity.check(WRITTEN, said, provider="openai-realtime", model="gpt-realtime")
        speech_fidelity.check(WRITTEN, WRITTEN.lower(), provider="openai-realtime")
        assert diverged() == 1
    finally:
        metrics.stop_watching_lanes()
    speech_fidelity.check(WRITTEN, said, provider="openai-realtime", model="gpt-realtime")
    assert diverged() == 1
