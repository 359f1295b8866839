"""The app under a real uvicorn server on a free port, with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
import websockets
from structlog.testing import capture_logs
from websockets.exceptions import ConnectionClosed

from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText
from voice_fsm.app import create_app
from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import ConversationClear
from voice_fsm.providers import Pipeline
from voice_fsm.session import Inbox, Session

from session_harness import StartingTextToSpeech, fake_pipeline, make_settings
from support.in_process import serving_app

pytestmark = pytest.mark.integration


class RunningServer:
    def __init__(self, port: int, pipeline: Pipeline, app: Any) -> None:
        self.port = port
        self.pipeline = pipeline
        self.app = app

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    pipeline = fake_pipeline(
        stt=FakeSpeechToText(delay=0.05),
        llm=FakeLanguageModel(first_token_delay=0.05, token_delay=0.02),
        tts=StartingTextToSpeech(first_audio_delay=0.02, chunk_delay=0.1),
    )
    app = create_app(make_settings(), pipeline=pipeline)
    async with serving_app(app) as port:
        yield RunningServer(port, pipeline, app)


async def _a_turn(ws: Any) -> list[Any]:
    await ws.send(json.dumps({"type": "input_audio.start"}))
    await ws.send(b"\x01\x00" * (bytes_for_ms(300) // 2))
    await ws.send(json.dumps({"type": "input_audio.stop"}))
    return await _events_until(ws, "turn.metrics")


async def _until_closed(ws: Any) -> tuple[list[Any], ConnectionClosed]:
    """What the server sends until it closes the connection, and how it closed it."""
    seen: list[Any] = []
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return seen, closed
        seen.append("audio" if isinstance(message, bytes) else json.loads(message))


async def _events_until(ws: Any, kind: str) -> list[Any]:
    seen: list[Any] = []
    while True:
        message = await asyncio.wait_for(ws.recv(), 5)
        item = "audio" if isinstance(message, bytes) else json.loads(message)
        seen.append(item)
        if isinstance(item, dict) and item["type"] == kind:
            return seen


def _session_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running the code of a session: its driver or one of its stages."""
    return [
        task
        for task in asyncio.all_tasks()
        if "Session." in getattr(task.get_coro(), "__qualname__", "")
    ]


async def test_the_pipeline_starts_before_the_first_session(server: RunningServer) -> None:
    assert isinstance(server.pipeline.tts, StartingTextToSpeech)
    assert server.pipeline.tts.starts == 1


async def test_a_turn_over_a_real_socket(server: RunningServer) -> None:
    async with websockets.connect(server.ws_url) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["protocol"] == 1
        assert created["input_audio"] == {
            "encoding": "pcm16le",
            "sample_rate": 24000,
            "channels": 1,
        }
        assert created["llm"] == {"provider": "fake", "model": "fake-llm"}
        await ws.send(json.dumps({"type": "input_audio.start"}))
        for _ in range(10):
            await ws.send(b"\x01\x00" * (bytes_for_ms(40) // 2))
        await ws.send("not json")
        await ws.send(json.dumps({"type": "input_audio.stop"}))
        events = await _events_until(ws, "turn.metrics")
    types = [e if e == "audio" else e["type"] for e in events]
    assert types.index("error") < types.index("transcript.done")
    assert (
        next(e for e in events if e != "audio" and e["type"] == "error")["code"]
        == "invalid-message"
    )
    assert types[-1] == "turn.metrics"
    assert "audio" in types


async def test_client_leaving_mid_turn_cancels_the_session_and_provider_streams(
    server: RunningServer,
) -> None:
    ws = await websockets.connect(server.ws_url)
    await ws.recv()
    await ws.send(json.dumps({"type": "input_audio.start"}))
    await ws.send(b"\x01\x00" * (bytes_for_ms(500) // 2))
    await ws.send(json.dumps({"type": "input_audio.stop"}))
    # Wait for the reply's audio: the speech stream is open on the server now.
    while not isinstance(await asyncio.wait_for(ws.recv(), 5), bytes):
        pass
    tts = server.pipeline.tts
    assert tts.ledger.open == 1  # type: ignore[attr-defined]
    assert _session_tasks()

    await ws.close()

    endpoint = server.app.state.endpoint
    for _ in range(200):
        if not endpoint.sessions and not _session_tasks():
            break
        await asyncio.sleep(0.01)
    assert endpoint.sessions == set()
    assert _session_tasks() == []
    for adapter in (server.pipeline.stt, server.pipeline.llm, tts):
        assert adapter.ledger.open == 0  # type: ignore[attr-defined]


async def test_page_and_health(server: RunningServer) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        for path in ("/", "/client"):
            page = await http.get(path)
            assert page.status_code == 200
            assert "<html" in page.text.lower()
        script = await http.get("/static/app.js")
        assert script.status_code == 200
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok"
        assert health["tts"] == {"provider": "fake", "model": "fake-tts"}


async def test_a_bug_in_a_command_handler_ends_its_session_with_one_error_and_1011(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = Session._handle

    async def buggy(self: Session, item: Inbox) -> None:
        if isinstance(item, ConversationClear):
            raise RuntimeError("a bug in a command handler")
        await handle(self, item)

    monkeypatch.setattr(Session, "_handle", buggy)
    async with websockets.connect(server.ws_url) as other:
        await other.recv()
        with capture_logs() as logs:
            async with websockets.connect(server.ws_url) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "conversation.clear"}))
                received, closed = await _until_closed(ws)

        assert [(e["type"], e["code"], e["stage"], e["retryable"]) for e in received] == [
            ("error", "internal-error", "server", False)
        ]
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1011
        crashes = [line for line in logs if line["event"] == "session.crashed"]
        assert len(crashes) == 1
        assert crashes[0]["log_level"] == "error"
        # What the JSON log line says: the traceback down to the handler that raised.
        rendered = structlog.processors.format_exc_info(None, "error", dict(crashes[0]))
        assert "Traceback" in rendered["exception"]
        assert "in buggy" in rendered["exception"]
        assert "RuntimeError: a bug in a command handler" in rendered["exception"]

        # The session that was already open, and a new one, are served as before.
        assert [e for e in await _a_turn(other) if e != "audio"][-1]["type"] == "turn.metrics"
    async with websockets.connect(server.ws_url) as later:
        assert json.loads(await later.recv())["type"] == "session.created"
        events = [e for e in await _a_turn(later) if e != "audio"]
        assert "error" not in [e["type"] for e in events]
    endpoint = server.app.state.endpoint
    for _ in range(200):
        if not endpoint.sessions:
            break
        await asyncio.sleep(0.01)
    assert endpoint.sessions == set()
