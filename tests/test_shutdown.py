"""SIGTERM drains: `voice-fsm serve` (fake providers) in a subprocess, with turns in flight.

The server stops taking sessions and answers /readyz with 503 at once, lets turns in flight
finish (up to VOICE_FSM_SERVER__DRAIN_S), closes every session with 1001 "server shutting
down", and exits 0 within the drain time plus 2 s, stuck clients included. A second signal
exits at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from support.live_server import (
    TIMEOUT,
    BareClient,
    Server,
    assert_clean_log,
    connect,
    fake_server,
    receive,
    report,
    say,
    stop,
    until_closed,
)

pytestmark = pytest.mark.integration

SHUTDOWN = (1001, "server shutting down")
# About 2 s of speech at real-time pace (0.1 s per 100 ms chunk).
SHORT_REPLY = "The capital of France is Paris, a city on the Seine."
# About 200 s of speech (9.6 MB) made in about 4 s: longer than the drain, and far more than
# the kernel buffers toward a client that does not read.
LONG_REPLY = " ".join(f"This is sentence number {n} of a very long answer." for n in range(100))


async def mid_reply(server: Server) -> tuple[ClientConnection, str]:
    """A client whose turn is speaking: the first audio of its reply has arrived."""
    ws, session_id = await connect(server)
    await say(ws)
    await stop(ws)
    async with asyncio.timeout(TIMEOUT):
        while not isinstance(await receive(ws), bytes):
            pass
    return ws, session_id


async def exited(process: subprocess.Popen[bytes], since: float, seconds: float) -> float:
    """Seconds from `since` until the process exited (polled every 20 ms)."""
    async with asyncio.timeout(seconds):
        while process.poll() is None:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.02)
    return time.monotonic() - since


async def readyz_draining_after(server: Server, since: float) -> float:
    """Seconds from `since` until /readyz says 503 draining."""
    async with asyncio.timeout(5):
        while True:
            ready = await server.get("/readyz")
            if ready.status_code == 503 and ready.json()["status"] == "draining":
                return time.monotonic() - since
            await asyncio.sleep(0.01)


async def test_sigterm_lets_20_turns_finish_then_closes_with_1001(tmp_path: Path) -> None:
    drain_s = 5.0
    with fake_server(
        tmp_path,
        SERVER__DRAIN_S=str(drain_s),
        FAKE__REPLY=SHORT_REPLY,
        FAKE__TTS_CHUNK_DELAY="0.1",
    ) as server:
        clients = await asyncio.gather(*(mid_reply(server) for _ in range(20)))
        readers = [asyncio.create_task(until_closed(ws, 15)) for ws, _ in clients]

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        ready_503_s = await readyz_draining_after(server, signalled)
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(server.ws_url, open_timeout=TIMEOUT)
        exit_s = await exited(server.process, signalled, drain_s + 5)
        kinds = await asyncio.gather(*readers)

        closes = [(ws.close_code, ws.close_reason) for ws, _ in clients]
        [drained] = server.events("server.drained")
        outcomes = [
            r["outcome"]
            for _, session_id in clients
            for r in server.events("turn.completed", session_id=session_id)
        ]
        response = refused.value.response
        figures = report(
            "SIGTERM with 20 turns in flight",
            readyz_503_after_s=round(ready_503_s, 3),
            new_ws=f"{response.status_code} {response.body!r}",
            exit_after_s=round(exit_s, 2),
            exit_code=server.process.returncode,
            drained=drained["drained"],
            cut=drained["cut"],
            closes=sorted(set(closes)),
            outcomes=sorted(set(outcomes)),
        )
        # Well before the drain ends; the figure is printed (0.5 s was met here only when quiet).
        assert ready_503_s < 1.0, figures
        assert response.status_code == 503, figures
        assert json.loads(response.body or b"{}") == {"error": "server-draining"}, figures
        assert int(response.headers["Retry-After"]) > 0, figures
        for events in kinds:  # the whole turn, then the close
            assert "response.done" in events, figures
            assert events[-1] == "turn.metrics", figures
        assert closes == [SHUTDOWN] * 20, figures
        assert outcomes == ["ok"] * 20, figures
        assert exit_s <= drain_s + 2, figures
        assert server.process.returncode == 0, figures
        assert (drained["drained"], drained["cut"]) == (20, 0), figures
        assert_clean_log(server)


async def test_a_turn_longer_than_the_drain_is_cut_and_a_stuck_client_does_not_hold_the_exit(
    tmp_path: Path,
) -> None:
    drain_s = 1.0
    with fake_server(
        tmp_path,
        SERVER__DRAIN_S=str(drain_s),
        FAKE__REPLY=LONG_REPLY,
        FAKE__LLM_TOKEN_DELAY="0",
        FAKE__TTS_CHUNK_DELAY="0",
    ) as server:
        stuck = BareClient(server)
        stuck.start_turn()
        held = await stuck.until_server_blocked()
        reading, reading_id = await mid_reply(server)
        reader = asyncio.create_task(until_closed(reading, 15))

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_s = await exited(server.process, signalled, drain_s + 5)
        kinds = await reader
        stuck.close()

        [drained] = server.events("server.drained")
        completed = {r["session_id"]: r["outcome"] for r in server.events("turn.completed")}
        figures = report(
            "SIGTERM with a turn longer than the drain and a client that never reads",
            stuck_client_held_by_kernel_bytes=held,
            exit_after_s=round(exit_s, 2),
            exit_code=server.process.returncode,
            reading_close=(reading.close_code, reading.close_reason),
            reading_last_events=kinds[-2:],
            drained=drained["drained"],
            cut=drained["cut"],
            left=drained["left"],
            aborted=[r["reason"] for r in server.events("connection.aborted")],
            outcomes=completed,
        )
        assert (reading.close_code, reading.close_reason) == SHUTDOWN, figures
        assert "response.done" not in kinds, figures  # cut before its end
        assert completed[reading_id] == "shutdown", figures
        assert (drained["drained"], drained["cut"]) == (0, 2), figures
        # The stuck client's close frame could not go out either: it was dropped.
        assert [r["reason"] for r in server.events("connection.aborted")] == ["close-timeout"]
        assert exit_s <= drain_s + 2, figures
        assert server.process.returncode == 0, figures
        assert_clean_log(server)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_exits_at_once(
    tmp_path: Path, second: signal.Signals
) -> None:
    with fake_server(
        tmp_path,
        SERVER__DRAIN_S="10",
        FAKE__REPLY=LONG_REPLY,
        FAKE__LLM_TOKEN_DELAY="0",
        FAKE__TTS_CHUNK_DELAY="0.05",  # the turn would go on for minutes
    ) as server:
        ws, _ = await mid_reply(server)
        reader = asyncio.create_task(until_closed(ws, 15))
        server.process.send_signal(signal.SIGTERM)
        await readyz_draining_after(server, time.monotonic())
        signalled = time.monotonic()
        server.process.send_signal(second)
        exit_s = await exited(server.process, signalled, 5)
        await reader
        figures = report(
            f"a second signal ({second.name}) while draining",
            exit_after_s=round(exit_s, 2),
            exit_code=server.process.returncode,
            close=(ws.close_code, ws.close_reason),
        )
        assert exit_s <= 1.0, figures
        assert server.process.returncode == 0, figures
        assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
        assert server.events("server.stopped"), figures  # the app's own shutdown ran
