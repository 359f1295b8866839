"""Bounded resources and correct endings, on a real server: `voice-fsm serve` with the fake
providers in a subprocess, driven by real WebSocket clients (and by bare sockets where a
client must misbehave in ways a library will not).

Memory is the server's resident set (VmRSS in /proc/<pid>/status); its peak (VmHWM) is reset
before a measurement, so a message buffered whole and freed again still shows. The figures
are printed (`pytest -s`) and quoted in the assertion messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from support.live_server import (
    MIB,
    SECOND_OF_AUDIO,
    TIMEOUT,
    BareClient,
    Server,
    assert_clean_log,
    connect,
    fake_server,
    log_time,
    many,
    raise_file_limit,
    receive,
    report,
    say,
    stop,
    time_to_first_audio,
    until,
    until_closed,
)

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------- memory


async def test_an_oversized_message_closes_with_1009_before_it_is_held(tmp_path: Path) -> None:
    """2 MiB (over the 1 MiB default) as the issue asks; 32 MiB to show the bound does not
    follow the message's size, which it would if the message were read in full first."""
    with fake_server(tmp_path) as server:
        ws, _ = await connect(server)  # warm up: the first session's imports and caches
        await ws.close()
        await server.wait_for_sessions(0)

        for size_mib in (2, 32):
            before = server.rss_mib()
            server.reset_peak()
            ws, _ = await connect(server, max_size=None)
            with contextlib.suppress(ConnectionClosed):  # closed while still sending: fine
                await ws.send(b"\x00" * (size_mib * MIB))
            await until_closed(ws)
            await server.wait_for_sessions(0)
            after, peak = server.rss_mib(), server.peak_mib()
            figures = report(
                f"a {size_mib} MiB message",
                close_code=ws.close_code,
                rss_before_mib=round(before, 1),
                rss_after_mib=round(after, 1),
                peak_mib=round(peak, 1),
            )
            assert ws.close_code == 1009, figures
            assert after - before <= 5, figures
            assert peak - before <= 5, figures  # not even held for a moment
        assert_clean_log(server)


async def test_200_sessions_past_their_audio_limit_hold_under_50_mib(tmp_path: Path) -> None:
    # 10 s instead of the default 60 keeps the test to 200 x 11 s of audio. It still tells: a
    # session that kept its audio after the error would hold 480 KB, 200 of them 92 MiB.
    with fake_server(
        tmp_path, LIMITS__MAX_AUDIO_SECONDS="10", LIMITS__MAX_SESSIONS_PER_CLIENT="1000"
    ) as server:
        second = b"\x10\x00" * (SECOND_OF_AUDIO // 2)

        async def over_the_limit(ws: ClientConnection) -> None:
            await ws.send(json.dumps({"type": "input_audio.start"}))
            for _ in range(12):  # one second past the limit
                await ws.send(second)
            errors = [e for e in await until(ws, "error") if isinstance(e, dict)]
            assert errors[-1]["code"] == "audio-too-long", errors[-1]

        async with many(server, 10):  # warm up, then let them go
            pass
        await server.wait_for_sessions(0)
        before, fds_before = server.rss_mib(), server.fds()
        server.reset_peak()

        clients = []
        try:
            for _ in range(4):  # 4 x 50 at once
                opened = await asyncio.gather(*(connect(server) for _ in range(50)))
                await asyncio.gather(*(over_the_limit(ws) for ws, _ in opened))
                clients += [ws for ws, _ in opened]
            assert await server.sessions() == 200
            after, peak, fds = server.rss_mib(), server.peak_mib(), server.fds()
        finally:
            for ws in clients:
                ws.transport.abort()
        figures = report(
            "200 sessions past audio-too-long, still open",
            rss_before_mib=round(before, 1),
            rss_after_mib=round(after, 1),
            added_mib=round(after - before, 1),
            per_session_kib=round((after - before) * 1024 / 200),
            peak_mib=round(peak, 1),
            fds=f"{fds_before}->{fds}",
        )
        assert after - before < 50, figures
        await server.wait_for_sessions(0)
        completed = server.events("turn.completed", code="audio-too-long")
        assert len(completed) == 200, figures
        assert_clean_log(server)


# ---------------------------------------------------------------------------- session caps


async def test_past_max_sessions_the_upgrade_gets_503_while_health_checks_answer(
    tmp_path: Path,
) -> None:
    raise_file_limit(2000 + 200)
    with fake_server(
        tmp_path, LIMITS__MAX_SESSIONS="2000", LIMITS__MAX_SESSIONS_PER_CLIENT="5000"
    ) as server:
        started = time.monotonic()
        async with many(server, 2000, batch=200):
            opened_s = time.monotonic() - started
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(server.ws_url, open_timeout=TIMEOUT)
            response = refused.value.response
            health = await server.get("/healthz")
            ready = await server.get("/readyz")
            rss, fds = server.rss_mib(), server.fds()
            figures = report(
                "2,001st session",
                status=response.status_code,
                retry_after=response.headers.get("Retry-After"),
                body=response.body,
                healthz=health.status_code,
                sessions=health.json()["sessions"],
                readyz=f"{ready.status_code} {ready.json()['status']}",
                opened_2000_in_s=round(opened_s, 1),
                rss_mib=round(rss, 1),
                fds=fds,
            )
            assert response.status_code == 503, figures
            assert int(response.headers["Retry-After"]) > 0, figures
            assert json.loads(response.body or b"{}") == {"error": "server-full"}, figures
            assert health.status_code == 200, figures
            assert health.json()["sessions"] == 2000, figures
            assert (ready.status_code, ready.json()["status"]) == (503, "full"), figures
        await server.wait_for_sessions(0, seconds=30)
        ws, _ = await connect(server)  # the slots were given back
        await ws.close()
        assert server.events("session.refused", reason="server-full")
        assert_clean_log(server)


# ---------------------------------------------------------------------------- slow readers


LONG_REPLY = " ".join(f"This is sentence number {n} of a very long answer." for n in range(100))


async def test_a_client_that_never_reads_is_aborted_and_others_do_not_notice(
    tmp_path: Path,
) -> None:
    with fake_server(
        tmp_path,
        LIMITS__SEND_TIMEOUT_S="2",
        # About 200 s of audio (9.6 MB) as fast as it can be made: far more than the
        # kernel buffers between the server and a client that does not read.
        FAKE__REPLY=LONG_REPLY,
        FAKE__LLM_TOKEN_DELAY="0",
        FAKE__TTS_FIRST_AUDIO_DELAY="0",
        FAKE__TTS_CHUNK_DELAY="0",
    ) as server:
        ws, _ = await connect(server)
        await time_to_first_audio(ws, cancel=True)  # warm up
        before = [await time_to_first_audio(ws, cancel=True) for _ in range(5)]

        stuck = BareClient(server)
        stuck.start_turn()
        stopped_at = time.time()
        turns: list[tuple[float, float, float]] = []  # (started, ended, latency), Unix time
        gone_at = None
        async with asyncio.timeout(15):
            while gone_at is None:
                begun = time.time()
                latency = await time_to_first_audio(ws, cancel=True)
                turns.append((begun, time.time(), latency))
                if await server.sessions() == 1:
                    gone_at = time.time()
        unread = stuck.unread()
        kernel_still_holds = stuck.server_send_queue()
        reset = stuck.was_reset(2)
        stuck.close()

        [aborted] = server.events("connection.aborted")
        blocked_from = log_time(aborted) - aborted["blocked_s"]
        while_held = [
            lat
            for begun, ended, lat in turns
            if begun >= blocked_from and ended <= log_time(aborted)
        ]
        [stuck_turn] = server.events("turn.completed", session_id=aborted["session_id"])
        await ws.close()
        zero_after = await server.wait_for_sessions(0)
        figures = report(
            "a client that never reads",
            reason=aborted["reason"],
            blocked_s=aborted["blocked_s"],
            aborted_after_stop_s=round(log_time(aborted) - stopped_at, 2),
            session_gone_after_abort_s=round(gone_at - log_time(aborted), 2),
            unread_bytes_at_client=unread,
            server_kernel_still_holds=kernel_still_holds,
            reset_seen=reset,
            stuck_turn_outcome=stuck_turn["outcome"],
            first_audio_before_ms=[round(x * 1000) for x in before],
            first_audio_while_held_ms=[round(x * 1000) for x in while_held],
            sessions_zero_in_s=round(zero_after, 2),
        )
        assert aborted["reason"] == "send-timeout", figures
        assert 2.0 <= aborted["blocked_s"] <= 2.0 + 1.0, figures
        assert gone_at - log_time(aborted) <= 1.0, figures
        # Dropped, not closed: the server's kernel does not go on trying to deliver to it.
        assert kernel_still_holds is None, figures
        assert reset, figures
        assert stuck_turn["outcome"] == "disconnected", figures
        assert aborted["turn"] == stuck_turn["turn"], figures  # logged with the turn it cut
        assert while_held, figures  # at least one turn ran while the stuck one was held
        # Unchanged, with a margin for a noisy 2-core machine: the median within 2x + 100 ms.
        median_before = sorted(before)[len(before) // 2]
        median_held = sorted(while_held)[len(while_held) // 2]
        assert median_held <= 2 * median_before + 0.1, figures
        assert_clean_log(server)


async def test_a_client_that_sends_without_reading_is_held_back_by_tcp(tmp_path: Path) -> None:
    """While its session waits on it (a send that cannot complete), whatever the client sends
    waits in the kernel: the inbox stops at its bytes and the socket is no longer read."""
    inbox = 2 * MIB
    with fake_server(
        tmp_path,
        LIMITS__SEND_TIMEOUT_S="3",
        LIMITS__INBOX_BYTES=str(inbox),
        FAKE__REPLY=LONG_REPLY,
        FAKE__LLM_TOKEN_DELAY="0",
        FAKE__TTS_FIRST_AUDIO_DELAY="0",
        FAKE__TTS_CHUNK_DELAY="0",
    ) as server:
        stuck = BareClient(server)
        stuck.start_turn()
        await stuck.until_server_blocked()
        before = server.rss_mib()
        server.reset_peak()
        # Stray audio in 2 s frames (the session is speaking): the first one's error event
        # cannot go out, which holds the session's driver.
        sent = await asyncio.to_thread(stuck.flood, b"\x10\x00" * 48_000, limit=256 * MIB)
        peak = server.peak_mib()
        held = server.rss_mib()
        await server.wait_for_sessions(0)
        stuck.close()
        [aborted] = server.events("connection.aborted")
        figures = report(
            "a client sending without reading",
            client_sent_mib=round(sent / MIB, 1),
            rss_before_mib=round(before, 1),
            rss_held_mib=round(held, 1),
            peak_mib=round(peak, 1),
            aborted=aborted["reason"],
        )
        assert sent < 256 * MIB, figures  # the server stopped taking it
        # The inbox, plus what is on its way in: a frame waiting for room, the chunk the
        # WebSocket parser holds, and the allocator's slack.
        assert peak - before <= inbox / MIB + 2, figures
        assert aborted["reason"] == "send-timeout", figures
        assert_clean_log(server)


# ---------------------------------------------------------------------------- floods and drops


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose stages each take a noticeable time, so a test can act in each."""
    with fake_server(
        tmp_path_factory.mktemp("staged"),
        FAKE__STT_DELAY="0.3",
        FAKE__LLM_FIRST_TOKEN_DELAY="0.3",
        FAKE__LLM_TOKEN_DELAY="0.02",
        FAKE__TTS_FIRST_AUDIO_DELAY="0.3",
        FAKE__TTS_CHUNK_DELAY="0.05",
        # 2,500 instead of 400 messages a second: 10,000 take 4 s to get through, not 25.
        LIMITS__MESSAGES_PER_S="2500",
    ) as server:
        yield server


async def test_a_flood_of_bad_frames_gets_a_few_errors_and_spares_others(
    staged: Server,
) -> None:
    flood, flood_id = await connect(staged)
    other, _ = await connect(staged)
    other_before = await time_to_first_audio(other)
    errors: list[dict[str, Any]] = []
    updated = asyncio.get_running_loop().create_future()

    async def read_flood() -> None:
        while True:
            item = await receive(flood, 30)
            if isinstance(item, dict) and item["type"] == "error":
                errors.append(item)
            elif isinstance(item, dict) and item["type"] == "session.updated":
                updated.set_result(time.monotonic())
                return

    reader = asyncio.create_task(read_flood())
    started = time.monotonic()
    for _ in range(10_000):
        await flood.send("not json")
    await flood.send(json.dumps({"type": "session.update", "session": {}}))
    sent_s = time.monotonic() - started
    # Meanwhile another session's turn.
    other_latency = await time_to_first_audio(other)
    other_done = time.monotonic()
    await asyncio.wait_for(reader, 30)
    duration = updated.result() - started
    # And the flooding session still works.
    flood_latency = await time_to_first_audio(flood)
    await flood.close()
    await other.close()
    await staged.wait_for_sessions(0)

    warnings = [
        r for r in staged.log() if r.get("session_id") == flood_id and r["level"] == "warning"
    ]
    reported = [r for r in warnings if r["event"] == "turn.error"]
    summaries = [r for r in warnings if r["event"] == "input.errors_dropped"]
    dropped = sum(r["count"] for r in summaries)
    budget = 5 * duration + 5 + 1  # errors_per_s x duration + burst (+1 for the edges)
    figures = report(
        "10,000 bad frames",
        sent_in_s=round(sent_s, 2),
        handled_in_s=round(duration, 2),
        error_events=len(errors),
        budget=round(budget, 1),
        warning_lines=len(warnings),
        errors_dropped_lines=len(summaries),
        dropped=dropped,
        other_first_audio_ms_before_during=[
            round(other_before * 1000),
            round(other_latency * 1000),
        ],
        flood_turn_after_first_audio_ms=round(flood_latency * 1000),
    )
    assert all(e["code"] == "invalid-message" for e in errors), figures
    assert 1 <= len(errors) <= budget, figures
    assert len(reported) == len(errors), figures
    assert len(errors) + dropped == 10_000, figures  # every bad frame counted
    assert 1 <= len(summaries) <= 3, figures
    assert other_done < updated.result(), figures  # the other turn ran while the flood did
    assert other_latency <= 2 * other_before + 0.5, figures
    assert len(warnings) <= budget + 3, figures
    assert_clean_log(staged)


MOMENTS = ("recording", "transcribing", "thinking", "speaking")


async def test_abrupt_disconnects_at_any_moment_end_as_disconnected(staged: Server) -> None:
    fds_before, threads_before = staged.fds(), staged.threads()

    async def drop_while(moment: str, how: str) -> str:
        ws, session_id = await connect(staged)
        await say(ws)
        if moment != "recording":
            await stop(ws)
        await until(ws, "state", state=moment)
        if moment == "speaking":
            while not isinstance(await receive(ws), bytes):
                pass
        sock = ws.transport.get_extra_info("socket")
        if how == "reset":  # RST: SO_LINGER with a zero timeout
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            ws.transport.abort()
        else:  # FIN, but no close frame
            ws.transport.close()
        return session_id

    cases = [(m, how) for m in MOMENTS for how in ("close", "reset")] * 5
    ids = await asyncio.gather(*(drop_while(m, how) for m, how in cases))
    zero_in = await staged.wait_for_sessions(0)

    outcomes = {}
    for (moment, how), session_id in zip(cases, ids, strict=True):
        completed = staged.events("turn.completed", session_id=session_id)
        outcomes[f"{moment}/{how}/{session_id[-4:]}"] = [r["outcome"] for r in completed]
    figures = report(
        "abrupt disconnects",
        cases=len(cases),
        disconnected=sum(o == ["disconnected"] for o in outcomes.values()),
        sessions_zero_in_s=round(zero_in, 2),
        fds=f"{fds_before}->{staged.fds()}",
        threads=f"{threads_before}->{staged.threads()}",
    )
    assert all(o == ["disconnected"] for o in outcomes.values()), (figures, outcomes)
    assert_clean_log(staged)


# ---------------------------------------------------------------------------- time limits


async def test_an_idle_session_is_closed_and_a_talking_one_is_not(tmp_path: Path) -> None:
    with fake_server(tmp_path, LIMITS__IDLE_TIMEOUT_S="1") as server:
        started = time.monotonic()  # before the server starts counting
        idle, _ = await connect(server)
        busy, _ = await connect(server)

        async def closed(ws: ClientConnection) -> float:
            await until_closed(ws, 5)
            return time.monotonic() - started

        idle_closed = asyncio.create_task(closed(idle))
        for _ in range(8):  # 2.4 s of a message every 0.3 s
            last_sent = time.monotonic() - started
            await busy.send(json.dumps({"type": "session.update", "session": {}}))
            await until(busy, "session.updated")
            await asyncio.sleep(0.3)
        assert busy.state is State.OPEN  # still open, long past the idle timeout
        busy_closed = await closed(busy)
        idle_after = await idle_closed
        figures = report(
            "idle timeout 1 s",
            idle_closed_after_s=round(idle_after, 2),
            idle_close=(idle.close_code, idle.close_reason),
            talking_closed_after_s=round(busy_closed, 2),
            talking_close=(busy.close_code, busy.close_reason),
        )
        assert (idle.close_code, idle.close_reason) == (1000, "idle timeout"), figures
        assert 1.0 <= idle_after <= 2.0, figures
        assert (busy.close_code, busy.close_reason) == (1000, "idle timeout"), figures
        assert 1.0 <= busy_closed - last_sent <= 2.0, figures
        await server.wait_for_sessions(0)
        assert_clean_log(server)


async def test_a_session_past_its_time_limit_is_closed_after_its_turn(tmp_path: Path) -> None:
    with fake_server(
        tmp_path,
        LIMITS__MAX_SESSION_S="1",
        FAKE__REPLY="The capital of France is Paris, a city on the Seine.",
        FAKE__TTS_CHUNK_DELAY="0.1",  # about 2 s of speaking
    ) as server:
        ws, _ = await connect(server)
        started = time.monotonic()
        await say(ws)
        await stop(ws)
        kinds = await until_closed(ws)
        closed_after = time.monotonic() - started
        figures = report(
            "session time limit 1 s, mid-turn",
            closed_after_s=round(closed_after, 2),
            close=(ws.close_code, ws.close_reason),
            last_events=kinds[-4:],
        )
        assert (ws.close_code, ws.close_reason) == (1008, "session time limit reached"), figures
        assert "response.done" in kinds, figures
        assert kinds[-1] == "turn.metrics", figures  # the whole turn, then the close
        assert closed_after > 1.5, figures
        [completed] = server.events("turn.completed")
        assert completed["outcome"] == "ok", figures
        await server.wait_for_sessions(0)
        assert_clean_log(server)


async def test_a_client_offering_compression_gets_plain_frames(staged: Server) -> None:
    # Browsers offer permessage-deflate; PCM audio does not compress, and deflating every
    # frame of every session was CPU the server could not spare under load.
    async with websockets.connect(staged.ws_url, compression="deflate") as client:
        assert client.request is not None
        assert client.response is not None
        assert "permessage-deflate" in client.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in client.response.headers
        assert client.protocol.extensions == []
        assert json.loads(await client.recv())["type"] == "session.created"
