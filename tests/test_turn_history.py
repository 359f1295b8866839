"""The dashboard's ring of finished turns, its snapshot, and the routes that serve it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from voice_fsm.app import create_app
from voice_fsm.events import InputAudioStart, InputAudioStop
from voice_fsm.latency_stats import STAGE_FIELDS, percentile, summarize
from voice_fsm.settings import AuthSettings, DashboardSettings
from voice_fsm.turn_history import ROLLING_WINDOW, TurnHistory
from voice_fsm.turn_record import TIMING_FIELDS, TurnRecord

from conftest import ClientFactory
from session_harness import Client, fake_pipeline, make_settings

KEY = "sk-dashboard-test"


def record(turn: int, rng: random.Random, *, session_id: str = "sess_a") -> TurnRecord:
    """A finished turn with made-up timings: about one in five fails before speech-to-text."""
    if rng.random() < 0.2:
        timings: dict[str, int | None] = dict.fromkeys(TIMING_FIELDS)
        timings["audio_in_ms"] = rng.randint(0, 99)
        return TurnRecord(
            session_id=session_id,
            turn=turn,
            outcome="error",
            mode="push_to_talk",
            providers={"stt": "fake", "llm": "fake", "tts": "fake"},
            timings=timings,
            code=rng.choice(["no-audio", "provider-timeout"]),
            stage="input",
            ended_at=1_800_000_000.0 + turn,
        )
    timings = {name: rng.randint(5, 3000) for name in TIMING_FIELDS}
    return TurnRecord(
        session_id=session_id,
        turn=turn,
        outcome=rng.choice(["ok", "ok", "ok", "interrupted"]),
        mode=rng.choice(["push_to_talk", "hands_free"]),
        providers={"stt": "fake", "llm": "fake", "tts": "fake"},
        timings=timings,
        ended_at=1_800_000_000.0 + turn,
    )


def line(r: TurnRecord) -> dict[str, Any]:
    """The `turn.completed` line of `r`, as the logger writes it (without its timestamp)."""
    return {"session_id": r.session_id, "turn": r.turn, **r.log_fields()}


async def full_turn(client: Client) -> None:
    await client.send(InputAudioStart(type="input_audio.start"))
    await client.speak(500)
    await client.send(InputAudioStop(type="input_audio.stop"))
    await client.until("turn.metrics")


@dataclass
class FakeSession:
    state: str


def test_the_history_keeps_the_last_n_turns_oldest_first() -> None:
    rng = random.Random(1)
    history = TurnHistory(5)
    records = [record(n, rng) for n in range(1, 13)]
    for r in records:
        history.turn_ended(r)
    assert [t["turn"] for t in history.turns] == [8, 9, 10, 11, 12]
    snapshot = history.snapshot()
    assert (snapshot["kept"], snapshot["capacity"], snapshot["finished"]) == (5, 5, 12)
    assert [t["turn"] for t in snapshot["turns"]] == [8, 9, 10, 11, 12]
    # Each kept turn is its log line plus when it ended.
    assert snapshot["turns"][-1] == {**line(records[-1]), "ended_at": records[-1].ended_at}
    assert history.snapshot(shown=2)["turns"] == snapshot["turns"][-2:]
    with pytest.raises(ValueError, match="at least one turn"):
        TurnHistory(0)


def test_the_snapshot_summary_is_summarize_over_the_same_lines() -> None:
    rng = random.Random(7)
    history = TurnHistory(300)
    records = [record(n, rng) for n in range(1, 401)]
    for r in records[:250]:
        history.turn_ended(r)
    first = history.snapshot()["summary"]
    assert first == summarize(line(r) for r in records[:250])
    assert first["turns"] == 250
    assert first["error_codes"]
    # The cached summary follows new turns, and covers the kept ones only (not the shown 200).
    for r in records[250:]:
        history.turn_ended(r)
    snapshot = history.snapshot()
    assert len(snapshot["turns"]) == 200
    assert snapshot["summary"] == summarize(line(r) for r in records[-300:])
    assert snapshot["summary"] != first
    v2v = sorted(
        r.timings["voice_to_voice_ms"]
        for r in records[-300:]
        if r.timings["voice_to_voice_ms"] is not None
    )
    # Nearest rank: the value at ceil(p * n) (1-based) of the sorted values.
    p50 = snapshot["summary"]["stages"]["voice_to_voice_ms"]["p50"]
    assert p50 == v2v[-(-len(v2v) // 2) - 1]


def test_the_rolling_series_are_the_percentiles_of_the_last_window() -> None:
    rng = random.Random(3)
    history = TurnHistory(100)
    records = [record(n, rng) for n in range(1, 61)]
    for r in records:
        history.turn_ended(r)
    series = history.snapshot()["series"]
    assert set(series) == set(STAGE_FIELDS)
    measured = [r for r in records if r.timings["stt_ms"] is not None]
    points = series["stt_ms"]
    assert [p["t"] for p in points] == [r.ended_at for r in measured]
    for i in (0, 5, len(points) - 1):
        window = [
            float(r.timings["stt_ms"] or 0)
            for r in measured[max(0, i + 1 - ROLLING_WINDOW) : i + 1]
        ]
        assert points[i]["value"] == window[-1]
        assert (points[i]["p50"], points[i]["p95"]) == (
            percentile(window, 50),
            percentile(window, 95),
        )


def test_live_sessions_are_counted_by_state() -> None:
    history = TurnHistory(10)
    sessions = [FakeSession(s) for s in ["idle", "idle", "speaking", "recording", "idle"]]
    live = history.snapshot(sessions)["sessions"]
    assert live == {
        "live": 5,
        "by_state": {
            "idle": 3,
            "recording": 1,
            "transcribing": 0,
            "thinking": 0,
            "speaking": 1,
            "acting": 0,
        },
    }
    assert history.snapshot()["sessions"]["live"] == 0


async def test_the_history_holds_what_the_turn_completed_line_says(
    connect: ClientFactory,
) -> None:
    history = TurnHistory(10)
    with capture_logs() as logs:
        client = await connect(observers=[history])
        await full_turn(client)
        await full_turn(client)
    written = [e for e in logs if e["event"] == "turn.completed"]
    assert len(written) == len(history.turns) == 2
    for kept, logged in zip(history.turns, written, strict=True):
        assert {k: v for k, v in kept.items() if k != "ended_at"} == {
            k: v for k, v in logged.items() if k not in ("event", "log_level")
        }
    assert history.snapshot()["summary"] == summarize(written)


async def test_the_routes_serve_the_page_and_the_snapshot_behind_the_key() -> None:
    settings = make_settings().model_copy(
        update={
            "auth": AuthSettings(api_keys=[KEY]),  # type: ignore[list-item]
            "dashboard": DashboardSettings(turns=3),
        }
    )
    app = create_app(settings, pipeline=fake_pipeline())
    rng = random.Random(5)
    for n in range(1, 6):
        app.state.turn_history.turn_ended(record(n, rng))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for path in ("/dashboard", "/v1/dashboard"):
            assert (await http.get(path)).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        page = await http.get("/dashboard", headers=auth)
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-cache"
        assert "/static/dashboard.js" in page.text
        answer = await http.get("/v1/dashboard", headers=auth)
    assert answer.status_code == 200
    snapshot = answer.json()
    assert app.state.turn_history in app.state.endpoint.observers
    assert [t["turn"] for t in snapshot["turns"]] == [3, 4, 5]
    assert snapshot["summary"] == app.state.turn_history.summary()
    assert snapshot["sessions"] == {
        "live": 0,
        "by_state": dict.fromkeys(
            ["idle", "recording", "transcribing", "thinking", "speaking", "acting"], 0
        ),
    }
