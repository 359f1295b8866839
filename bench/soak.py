"""Soak: the server under abrupt disconnects, oversized and flooding clients, slow readers and
a SIGTERM under load, with its RSS, open files, threads and live sessions before and after.

Starts `voice-fsm serve` on the fake providers (JSON logs to a file, a free port, the
per-client session cap raised, since every client here is 127.0.0.1) and runs five phases:

1. Baseline: a few turns one after another, then one burst of `--concurrency` turns at once
   (so the baseline has seen the same peak as the rounds), then the figures.
2. `--rounds` rounds of `--disconnects` clients, `--concurrency` at a time, that each start a
   turn and drop the TCP connection without a close frame (a FIN or, half the time, an RST) at
   a random moment: while recording (between frames or in the middle of one), after
   input_audio.stop while transcribing, while the server thinks, or while the reply's audio
   arrives. After each round, once /healthz counts no session: the figures, the turns'
   outcomes, tracebacks and crashes in the server's log, and a fresh turn's voice-to-voice.
3. `--abusers` clients, a third of each kind, measured after each kind: 2 MiB messages at
   once (close 1009 expected); recordings past max_audio_seconds one after another, each
   client staying connected after its audio-too-long (what they add while they stay, against
   the issue's 0.25 MiB each plus one 60 s recording, which the server holds at times anyway);
   floods of 2,000 bad text frames at once, with another client's turns timed meanwhile.
4. `--slow-readers` clients that stop reading while a long reply streams. On a second server,
   whose fake reply is 8 MB of audio (enough to fill the kernel's socket buffers on loopback,
   which grow to 4 MiB), with a short send timeout: each is aborted. Another client's turns
   are timed to their first reply audio (then interrupted: the whole reply takes seconds to
   read) before, and while the slow readers' sends are blocked.
5. SIGTERM while `--sigterm-clients` turns are in flight, plus one client recording past the
   drain time and one that never reads: who got response.done and 1001 "server shutting
   down", and how long the process took to exit.

Prints a table per phase and the issue's targets, writes artifacts/soak.json, and exits 1 when
a target is missed.

    make soak                          # or: .venv/bin/python bench/soak.py
    make soak ARGS="--rounds 2 --disconnects 300"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import base_env, cpu_seconds, free_port, machine, start_server, stop_server

from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import ResponseDone
from voice_fsm.talk import TalkError, talk
from voice_fsm.testing.speech import voiced

MIB = 1024 * 1024
SEND_TIMEOUT_S = 3.0
DRAIN_S = 5.0
FRAME_MS = 40
QUESTION = voiced(0.5)
"""What every client says: half a second of voiced sound (the fakes transcribe anything)."""
LONG_REPLY = " ".join(["Paris is the capital of France, and it sits on the Seine."] * 72)
"""Phase 4's fake reply: 4,175 characters, 167 s (8 MB) of audio at the fake's 40 ms a
character; 3 MB fit in the socket buffers between a server and a client that does not read."""
BAD_FRAMES = ("not json", '{"type": "no.such.event"}', '{"type": "input_audio.stop"}')
MOMENTS = ("recording", "mid-frame", "transcribing", "thinking", "audio")


# ---------------------------------------------------------------- a raw WebSocket client


class Closed(Exception):
    """The connection ended: with the server's close frame, or without one (`code` None)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Refused(Exception):
    """The server answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RawClient:
    """A WebSocket client in a few lines, for what a well-behaved library will not do: drop
    the TCP connection without a close frame, stop reading, send a frame past the limit."""

    def __init__(
        self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:  # before connecting: it also sets the window offered
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        # A small read-ahead for a client that stops reading: the socket fills, not our buffer.
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        client = cls(sock, reader, writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            client.drop(rst=False)
            raise Closed(None, "closed during the handshake") from err
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            client.drop(rst=False)
            raise Refused(status)
        return client

    def send_frame(self, opcode: int, payload: bytes, *, cut_at: int | None = None) -> None:
        """One final frame; with `cut_at`, only its first `cut_at` payload bytes go out."""
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        # A client must mask its frames; an all-zero key leaves the payload as it is.
        self.writer.write(head + b"\0\0\0\0" + payload[:cut_at])

    def send_json(self, event: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(event).encode())

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def send_audio(self, pcm: bytes) -> None:
        self.send_frame(0x2, pcm)

    async def flush(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as err:
            raise Closed(None, type(err).__name__) from err

    async def recv(self) -> str | bytes:
        """The next text or binary message; answers pings and closes; raises `Closed`."""
        try:
            while True:
                first, second = await self.reader.readexactly(2)
                size = second & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(size)
                opcode = first & 0x0F
                if opcode == 0x1:
                    return payload.decode()
                if opcode in (0x0, 0x2):  # the server does not fragment: whole messages
                    return payload
                if opcode == 0x9:
                    self.send_frame(0xA, payload)
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        self.send_frame(0x8, payload[:2])
                    raise Closed(code, payload[2:].decode(errors="replace"))
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            raise Closed(None, type(err).__name__) from err

    async def event(self) -> dict[str, Any]:
        """The next JSON event, skipping audio."""
        while True:
            message = await self.recv()
            if isinstance(message, str):
                event: dict[str, Any] = json.loads(message)
                return event

    async def until(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            event = await self.event()
            if check(event):
                return event

    async def start_turn(self) -> str:
        """Wait for session.created, start a recording; the session's id."""
        created = await self.until(lambda e: e["type"] == "session.created")
        self.send_json({"type": "input_audio.start"})
        await self.until(is_state("recording"))
        return str(created["session_id"])

    def drop(self, *, rst: bool) -> None:
        """Leave without a close frame: a FIN, or with `rst` a reset (SO_LINGER 0)."""
        if rst:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self, code: int = 1000) -> int | None:
        """A polite close: the code of the server's answering close frame, None if none came."""
        try:
            self.send_frame(0x8, struct.pack("!H", code))
            async with asyncio.timeout(5):
                while True:
                    await self.recv()
        except Closed as closed:
            return closed.code
        except (TimeoutError, ConnectionError, RuntimeError):
            return None
        finally:
            self.drop(rst=False)


def is_state(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == "state" and event["state"] in states


def frames(pcm: bytes, frame_ms: int = FRAME_MS) -> list[bytes]:
    size = bytes_for_ms(frame_ms)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


# ---------------------------------------------------------------- the server, measured


@dataclass
class Figures:
    rss_mib: float
    fds: int
    threads: int
    sessions: int


def proc_status(pid: int) -> tuple[float, int, int]:
    """RSS in MiB, open file descriptors and threads of process `pid` (Linux)."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_mib = int(status["VmRSS"].split()[0]) / 1024
    return round(rss_mib, 1), len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


@dataclass
class LogSlice:
    """What the server logged since the last look."""

    records: list[dict[str, Any]]
    text: str

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def count(self, name: str) -> int:
        return len(self.events(name))

    def outcomes(self) -> dict[str, int]:
        """turn.completed lines by outcome, an error's with its code (error:internal-error)."""
        return dict(
            Counter(
                f"{r.get('outcome')}:{r['code']}" if r.get("code") else str(r.get("outcome"))
                for r in self.events("turn.completed")
            )
        )

    @property
    def tracebacks(self) -> int:
        return self.text.count("Traceback (most recent call last)")

    def loud(self) -> dict[str, int]:
        """Warnings and errors by event; lines that are not JSON (uvicorn's own, Python's
        last-resort handler) as "plain text lines"."""
        counts = Counter(
            f"{r.get('level')} {r.get('event')}"
            for r in self.records
            if r.get("level") in ("warning", "error", "critical")
        )
        plain = sum(1 for line in self.text.splitlines() if line and not line.startswith("{"))
        if plain:
            counts["plain text lines"] = plain
        return dict(counts)


class ServerLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def seen(self, event: str) -> bool:
        """Whether an `event` line was written since the last `take`."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            return f'"event": "{event}"'.encode() in file.read()

    def take(self) -> LogSlice:
        """The whole lines written since the last call."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        text = data[:end].decode(errors="replace")
        records = []
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return LogSlice(records, text)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: ServerLog
    http: httpx.AsyncClient

    @classmethod
    async def start(cls, workdir: Path, **settings: str) -> Server:
        port = free_port()
        env = base_env(
            VOICE_FSM_STT__PROVIDER="fake",
            VOICE_FSM_LLM__PROVIDER="fake",
            VOICE_FSM_TTS__PROVIDER="fake",
            VOICE_FSM_VAD__PROVIDER="off",
            VOICE_FSM_LOG__FORMAT="json",
            VOICE_FSM_LIMITS__MAX_SESSIONS_PER_CLIENT="100000",
            **settings,
        )
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        process, _ = await asyncio.to_thread(start_server, port, workdir, env)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        return cls(process, port, workdir, ServerLog(workdir / "server.log"), http)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def sessions(self) -> int:
        health = (await self.http.get("/healthz")).json()
        return int(health["sessions"])

    async def figures(self) -> Figures:
        sessions = await self.sessions()
        return Figures(*proc_status(self.process.pid), sessions=sessions)

    async def settle(self, baseline: Figures | None, wait_s: float = 30) -> tuple[Figures, float]:
        """Wait until /healthz counts no session and (for up to 5 s more) the open files and
        threads are back at `baseline`'s; the figures then, and the seconds it took."""
        started = time.perf_counter()
        deadline = started + wait_s
        # Polling the server: there is nothing to wait on in this process.
        while await self.sessions() and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        back_by = min(deadline, time.perf_counter() + 5)
        while baseline is not None and time.perf_counter() < back_by:
            _, fds, threads = proc_status(self.process.pid)
            if (fds, threads) == (baseline.fds, baseline.threads):
                break
            await asyncio.sleep(0.1)
        return await self.figures(), round(time.perf_counter() - started, 2)

    async def stop(self) -> None:
        await self.http.aclose()
        if self.process.poll() is None:
            await asyncio.to_thread(stop_server, self.process)


# ---------------------------------------------------------------- turns that work


@dataclass
class FreshTurn:
    ok: bool
    response_done: bool
    voice_to_voice_ms: int | None
    server_voice_to_voice_ms: int | None
    seconds: float
    error: str | None = None


async def fresh_turn(url: str) -> FreshTurn:
    """A whole turn with the project's own client: voice-to-voice as that client saw it."""
    started = time.perf_counter()
    try:
        result = await talk(url, QUESTION, time_limit=30)
    except TalkError as err:
        return FreshTurn(
            False, False, None, None, round(time.perf_counter() - started, 2), str(err)
        )
    done = any(isinstance(event, ResponseDone) for event in result.events)
    return FreshTurn(
        result.ok,
        done,
        result.client_voice_to_voice_ms,
        result.metrics.voice_to_voice_ms if result.metrics else None,
        round(time.perf_counter() - started, 2),
        result.error.code.value if result.error else None,
    )


def median_ms(turns: list[FreshTurn]) -> float | None:
    values = [t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None]
    return round(statistics.median(values), 1) if values else None


async def bounded(
    count: int, concurrency: int, work: Callable[[int], Awaitable[None]], limit_s: float
) -> None:
    """`work(0)` ... `work(count - 1)`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await work(index)

    async with asyncio.timeout(limit_s):
        await asyncio.gather(*(one(i) for i in range(count)))


# ---------------------------------------------------------------- phase 1 and 2


async def baseline(server: Server, concurrency: int) -> dict[str, Any]:
    warm = [await fresh_turn(server.ws_url) for _ in range(3)]
    burst = await asyncio.gather(*(fresh_turn(server.ws_url) for _ in range(concurrency)))
    figures, settle_s = await server.settle(None)
    log = server.log.take()
    return {
        "turns": len(warm) + len(burst),
        "turns_ok": sum(t.ok for t in [*warm, *burst]),
        "voice_to_voice_ms": median_ms(warm),
        "figures": asdict(figures),
        "settle_s": settle_s,
        "tracebacks": log.tracebacks,
        "outcomes": log.outcomes(),
    }


@dataclass
class Disconnects:
    moments: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    recording: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    moment_of: dict[str, str] = field(default_factory=dict)
    """Each session's moment, by its id: where the log's crashes happened."""


async def abrupt_client(port: int, rng: random.Random, tally: Disconnects) -> None:
    """Start a turn, then drop the connection without a close frame at a random moment."""
    moment = rng.choice(MOMENTS)
    rst = rng.random() < 0.5
    try:
        client = await RawClient.connect(port)
    except (Refused, Closed, OSError) as err:
        tally.problems[f"connect: {err}"] += 1
        return
    try:
        async with asyncio.timeout(20):
            tally.moment_of[await client.start_turn()] = moment
            tally.recording += 1
            audio = frames(QUESTION)
            if moment in ("recording", "mid-frame"):
                for frame in audio[: rng.randrange(len(audio))]:
                    client.send_audio(frame)
                if moment == "mid-frame":
                    frame = audio[0]
                    client.send_frame(0x2, frame, cut_at=rng.randrange(1, len(frame)))
                await client.flush()
                await asyncio.sleep(rng.uniform(0, 0.05))
            else:
                for frame in audio:
                    client.send_audio(frame)
                client.send_json({"type": "input_audio.stop"})
                await client.flush()
                if moment == "transcribing":
                    await asyncio.sleep(rng.uniform(0, 0.05))  # the fake STT takes 50 ms
                elif moment == "thinking":
                    await client.until(is_state("thinking", "speaking", "idle"))
                    await asyncio.sleep(rng.uniform(0, 0.1))  # LLM, then TTS: 50 ms each
                else:
                    while not isinstance(await client.recv(), bytes):
                        pass
                    for _ in range(rng.randrange(8)):  # of the reply's 13 chunks
                        await client.recv()
    except Closed as closed:
        tally.problems[f"closed by the server: {closed}"] += 1
    except TimeoutError:
        tally.problems["timed out"] += 1
    finally:
        client.drop(rst=rst)
    tally.moments[moment] += 1
    tally.resets += rst


def internal_errors(outcomes: dict[str, int]) -> int:
    return sum(n for outcome, n in outcomes.items() if "internal-error" in outcome)


def round_targets(
    row: dict[str, Any], before: dict[str, Any], start: dict[str, Any]
) -> dict[str, bool]:
    fig = row["figures"]
    return {
        "0 internal-error outcomes": internal_errors(row["outcomes"]) == 0,
        "0 tracebacks, 0 stage.crashed": row["tracebacks"] == 0 and row["stage_crashed"] == 0,
        "RSS at most 10 MiB above the round before": fig["rss_mib"] - before["rss_mib"] <= 10,
        "file descriptors back to the start": fig["fds"] == start["fds"],
        "threads back to the start": fig["threads"] == start["threads"],
        "live sessions back to 0": fig["sessions"] == 0,
        "a fresh turn works (response.done)": row["fresh_turn"]["response_done"],
    }


async def disconnect_round(
    server: Server,
    number: int,
    args: argparse.Namespace,
    rng: random.Random,
    start: Figures,
    before: dict[str, Any],
) -> dict[str, Any]:
    tally = Disconnects()
    started = time.perf_counter()

    async def work(_: int) -> None:
        await abrupt_client(server.port, rng, tally)

    await bounded(args.disconnects, args.concurrency, work, limit_s=600)
    duration = round(time.perf_counter() - started, 1)
    figures, settle_s = await server.settle(start)
    log = server.log.take()
    turn = await fresh_turn(server.ws_url)
    fresh_log = server.log.take()
    row: dict[str, Any] = {
        "round": number,
        "clients": args.disconnects,
        "turns_started": tally.recording,
        "moments": dict(tally.moments),
        "resets": tally.resets,
        "client_problems": dict(tally.problems),
        "duration_s": duration,
        "settle_s": settle_s,
        "figures": asdict(figures),
        "rss_delta_mib": round(figures.rss_mib - before["rss_mib"], 1),
        "turns_logged": log.count("turn.completed"),
        "outcomes": log.outcomes(),
        "tracebacks": log.tracebacks + fresh_log.tracebacks,
        "stage_crashed": log.count("stage.crashed") + fresh_log.count("stage.crashed"),
        "session_crashed": log.count("session.crashed"),
        "warnings_and_errors": log.loud(),
        "bad_endings_by_moment": dict(
            Counter(
                f"{tally.moment_of.get(str(r.get('session_id')), '?')}: {r.get('event')}"
                for r in log.records
                if r.get("event") in ("stage.crashed", "session.crashed")
                or r.get("code") == "internal-error"
            )
        ),
        "fresh_turn": asdict(turn),
    }
    row["targets"] = round_targets(row, before, asdict(start))
    return row


# ---------------------------------------------------------------- phase 3


async def oversized(port: int) -> dict[str, Any]:
    """A 2 MiB binary message: the server should close with 1009 from the frame's header."""
    client = await RawClient.connect(port)
    try:
        await client.until(lambda e: e["type"] == "session.created")
        client.send_audio(bytes(2 * MIB))
        with contextlib.suppress(Closed):
            await client.flush()
        async with asyncio.timeout(10):
            while True:
                await client.recv()
    except Closed as closed:
        return {"kind": "oversized", "close": closed.code, "reason": closed.reason}
    except TimeoutError:
        return {"kind": "oversized", "close": "none within 10 s"}
    finally:
        client.drop(rst=False)


async def too_long(
    port: int, hold: asyncio.Event, reached: asyncio.Event, max_audio_s: float
) -> dict[str, Any]:
    """A recording past max_audio_seconds (in 500 ms frames); the client then stays until
    `hold` is set, and closes politely. `reached` is set once it has its error (or failed)."""
    client = await RawClient.connect(port)
    out: dict[str, Any] = {"kind": "audio-too-long"}
    try:
        await client.start_turn()
        frame = bytes(bytes_for_ms(500))
        for index in range(int(max_audio_s * 2) + 2):
            client.send_audio(frame)
            if index % 8 == 0:
                await client.flush()
        await client.flush()
        async with asyncio.timeout(30):
            error = await client.until(lambda e: e["type"] == "error")
        out["error"] = error["code"]
        reached.set()
        await hold.wait()
        out["close_answered_with"] = await client.close()
    except (Closed, TimeoutError) as err:
        out["problem"] = repr(err)
    finally:
        reached.set()
        client.drop(rst=False)
    return out


async def flooder(port: int, count: int) -> dict[str, Any]:
    """`count` bad text frames as fast as the server takes them, then a turn's start."""
    client = await RawClient.connect(port)
    errors: Counter[str] = Counter()
    recording = asyncio.Event()
    out: dict[str, Any] = {"kind": "flood", "frames": count}

    async def read() -> None:
        with contextlib.suppress(Closed):
            while True:
                event = await client.event()
                if event["type"] == "error":
                    errors[event["code"]] += 1
                elif is_state("recording")(event):
                    recording.set()

    await client.until(lambda e: e["type"] == "session.created")
    reader = asyncio.create_task(read())
    started = time.perf_counter()
    try:
        for index in range(count):
            client.send_text(BAD_FRAMES[index % len(BAD_FRAMES)])
            if index % 64 == 0:
                await client.flush()
        client.send_json({"type": "input_audio.start"})
        await client.flush()
        async with asyncio.timeout(60):
            await recording.wait()
        out["survived"] = True
    except (Closed, TimeoutError) as err:
        out["survived"] = False
        out["problem"] = repr(err)
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["error_events"] = dict(errors)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    out["close_answered_with"] = await client.close()
    return out


async def abusers(
    server: Server, args: argparse.Namespace, start: Figures, base_v2v_ms: float | None
) -> dict[str, Any]:
    """Three steps, each measured: the 2 MiB messages at once; the audio-too-long clients one
    after another, each staying; the floods at once, with another client's turns meanwhile."""
    n_long = args.abusers // 3
    n_over = (args.abusers - n_long) // 2
    n_flood = args.abusers - n_long - n_over
    steps: dict[str, Figures] = {"before": await server.figures()}
    async with asyncio.timeout(300):
        oversize = await asyncio.gather(*(oversized(server.port) for _ in range(n_over)))
        steps["after the 2 MiB messages"], _ = await server.settle(start)

        hold = asyncio.Event()
        held: list[asyncio.Task[dict[str, Any]]] = []
        for _ in range(n_long):
            reached = asyncio.Event()
            held.append(asyncio.create_task(too_long(server.port, hold, reached, args.max_audio)))
            await reached.wait()
        holding = steps[f"holding {n_long} audio-too-long"] = await server.figures()
        hold.set()
        long_results = await asyncio.gather(*held)
        steps["after they left"], _ = await server.settle(start)

        floods = [
            asyncio.create_task(flooder(server.port, args.flood_frames)) for _ in range(n_flood)
        ]
        flood_turns: list[FreshTurn] = []
        while not all(f.done() for f in floods):
            flood_turns.append(await fresh_turn(server.ws_url))
        flood_results = [f.result() for f in floods]
        steps["after the floods"], settle_s = await server.settle(start)
    log = server.log.take()
    # The budget: 200 such connections add less than 50 MiB, 0.25 MiB each; plus one
    # recording of the longest audio, which a server that takes such turns holds at times.
    longest_mib = bytes_for_ms(int(args.max_audio * 1000)) / MIB
    long_growth = holding.rss_mib - steps["after the 2 MiB messages"].rss_mib
    long_budget = longest_mib + 0.25 * n_long
    error_events = [sum(f["error_events"].values()) for f in flood_results]
    flood_log_lines = log.count("turn.error") + log.count("input.errors_dropped") - n_long
    row: dict[str, Any] = {
        "clients": {"oversized": n_over, "audio_too_long": n_long, "flood": n_flood},
        "steps": {name: asdict(figures) for name, figures in steps.items()},
        "settle_s": settle_s,
        "oversized_rss_growth_mib": round(
            steps["after the 2 MiB messages"].rss_mib - steps["before"].rss_mib, 1
        ),
        "oversized_closes": dict(Counter(str(r.get("close")) for r in oversize)),
        "too_long_errors": dict(Counter(str(r.get("error")) for r in long_results)),
        "too_long_stayed": sum(r.get("close_answered_with") == 1000 for r in long_results),
        "too_long_rss_growth_mib": round(long_growth, 1),
        "too_long_rss_budget_mib": round(long_budget, 2),
        "max_audio_s": args.max_audio,
        "floods_survived": sum(bool(f.get("survived")) for f in flood_results),
        "flood_frames_each": args.flood_frames,
        "flood_seconds_max": max((f["seconds"] for f in flood_results), default=None),
        "flood_error_events_max": max(error_events, default=None),
        "flood_errors_dropped_logged": sum(
            int(r.get("count", 0)) for r in log.events("input.errors_dropped")
        ),
        "flood_log_lines_per_flooder": round(flood_log_lines / max(n_flood, 1), 1),
        "turns_during_flood": [asdict(t) for t in flood_turns],
        "voice_to_voice_during_flood_ms": median_ms(flood_turns),
        "baseline_v2v_ms": base_v2v_ms,
        "outcomes": log.outcomes(),
        "tracebacks": log.tracebacks,
        "warnings_and_errors": log.loud(),
        "problems": [r for r in [*oversize, *long_results, *flood_results] if "problem" in r][:5],
    }
    slowest = max((f["seconds"] for f in flood_results), default=0)
    after = steps["after the floods"]
    row["targets"] = {
        "every 2 MiB message closed with 1009": row["oversized_closes"] == {"1009": n_over},
        "RSS after the 2 MiB messages at most 5 MiB above before": row["oversized_rss_growth_mib"]
        <= 5,
        "every audio-too-long client got the error and stayed": row["too_long_errors"]
        == {"audio-too-long": n_long}
        and row["too_long_stayed"] == n_long,
        # The figure: 200 such connections add less than 50 MiB.
        "the audio-too-long sessions held add under 0.25 MiB each + one recording": long_growth
        < long_budget,
        "every flooded session survived": row["floods_survived"] == n_flood,
        "error events bounded (errors_per_s 5, burst 5)": all(
            e <= 5 * slowest + 5 + 1 for e in error_events
        ),
        "turns during the flood work": bool(flood_turns)
        and all(t.response_done for t in flood_turns),
        "their voice-to-voice p50 within 100 ms of the baseline's": row[
            "voice_to_voice_during_flood_ms"
        ]
        is not None
        and base_v2v_ms is not None
        and row["voice_to_voice_during_flood_ms"] <= base_v2v_ms + 100,
        "0 tracebacks": log.tracebacks == 0,
        "file descriptors and threads back to the start": (after.fds, after.threads)
        == (start.fds, start.threads),
        "live sessions back to 0": after.sessions == 0,
    }
    return row


# ---------------------------------------------------------------- phase 4


async def slow_reader(port: int, reading_stopped: list[float]) -> dict[str, Any]:
    """A turn whose reply this client stops reading at its first audio, for good."""
    client = await RawClient.connect(port, rcvbuf=4096)
    out: dict[str, Any] = {}
    try:
        out["session_id"] = await client.start_turn()
        for frame in frames(QUESTION):
            client.send_audio(frame)
        client.send_json({"type": "input_audio.stop"})
        await client.flush()
        while not isinstance(await client.recv(), bytes):
            pass
        out["stopped_reading_at"] = time.time()
        reading_stopped.append(time.time())
        return out
    except Closed as closed:
        out["problem"] = repr(closed)
        client.drop(rst=False)
        return out
    finally:
        out["client"] = client


async def interrupted_turn(port: int) -> FreshTurn:
    """A turn whose voice-to-voice is timed at its first reply audio, then cut short with
    response.cancel (a barge-in): the whole 8 MB reply would take seconds to read."""
    started = time.perf_counter()
    client = await RawClient.connect(port)
    try:
        async with asyncio.timeout(30):
            await client.start_turn()
            for frame in frames(QUESTION):
                client.send_audio(frame)
            client.send_json({"type": "input_audio.stop"})
            await client.flush()
            stop_sent = time.perf_counter()
            while not isinstance(await client.recv(), bytes):
                pass
            v2v = round((time.perf_counter() - stop_sent) * 1000)
            client.send_json({"type": "response.cancel", "played_ms": 0})
            await client.until(is_state("idle"))
        ok = await client.close() == 1000
        return FreshTurn(ok, False, v2v, None, round(time.perf_counter() - started, 2))
    except (Closed, TimeoutError) as err:
        return FreshTurn(
            False, False, None, None, round(time.perf_counter() - started, 2), repr(err)
        )
    finally:
        client.drop(rst=False)


async def read_rest(client: RawClient) -> dict[str, Any]:
    """Read what a slow reader left in its buffers: how its connection ended, and after how
    many bytes."""
    read = 0
    try:
        async with asyncio.timeout(10):
            while True:
                message = await client.recv()
                read += len(message)
    except Closed as closed:
        how = (
            f"close {closed.code} {closed.reason}" if closed.code else f"dropped ({closed.reason})"
        )
        return {"ended": f"{how} after {read} more bytes", "bytes_read_after": read}
    except TimeoutError:
        return {"ended": "still open after 10 s", "bytes_read_after": read}
    finally:
        client.drop(rst=False)


async def until_quiet(pid: int, limit_s: float) -> float:
    """Seconds until process `pid` uses less than a tenth of a core over 0.2 s: it has filled
    the slow readers' buffers and its sends to them are all blocked."""
    started = time.perf_counter()
    last = cpu_seconds(pid) or 0.0
    while time.perf_counter() - started < limit_s:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid) or 0.0
        if now - last < 0.02:
            break
        last = now
    return round(time.perf_counter() - started, 2)


def log_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


async def slow_readers(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = await Server.start(
        workdir,
        VOICE_FSM_FAKE__REPLY=LONG_REPLY,
        VOICE_FSM_FAKE__LLM_TOKEN_DELAY="0",
        VOICE_FSM_LIMITS__SEND_TIMEOUT_S=f"{SEND_TIMEOUT_S:g}",
    )
    try:
        await fresh_turn(server.ws_url)  # warm-up
        start, _ = await server.settle(None)
        before_turns = [await interrupted_turn(server.port) for _ in range(5)]
        stopped: list[float] = []
        readers = [
            asyncio.create_task(slow_reader(server.port, stopped)) for _ in range(args.slow_readers)
        ]
        slow = await asyncio.gather(*readers)  # each has stopped reading, or failed
        filled_s = await until_quiet(server.process.pid, limit_s=10)
        stalled = await server.figures()
        # Turns while every slow reader's send is blocked, until the first is aborted.
        while_turns: list[FreshTurn] = []
        while len(while_turns) < 5 and not server.log.seen("connection.aborted"):
            while_turns.append(await interrupted_turn(server.port))
        after, settle_s = await server.settle(start, wait_s=SEND_TIMEOUT_S + 30)
        ends = await asyncio.gather(*(read_rest(s.pop("client")) for s in slow))
        log = server.log.take()
    finally:
        await server.stop()
    aborts = {r.get("session_id"): r for r in log.events("connection.aborted")}
    rows = []
    for reader, end in zip(slow, ends, strict=True):
        abort = aborts.get(reader.get("session_id"))
        stopped_at = reader.get("stopped_reading_at")
        rows.append(
            {
                "session_id": reader.get("session_id"),
                "problem": reader.get("problem"),
                "aborted": abort is not None,
                "reason": abort.get("reason") if abort else None,
                "blocked_s": abort.get("blocked_s") if abort else None,
                "aborted_after_reading_stopped_s": round(log_time(abort) - stopped_at, 2)
                if abort and stopped_at
                else None,
                **end,
            }
        )
    before_ms, while_ms = median_ms(before_turns), median_ms(while_turns)
    row: dict[str, Any] = {
        "reply_audio_mb": round(len(LONG_REPLY) * 40 * 48 / 1e6, 1),
        "send_timeout_s": SEND_TIMEOUT_S,
        "start": asdict(start),
        "stalled": asdict(stalled),
        "after": asdict(after),
        "settle_s": settle_s,
        "buffers_filled_after_s": filled_s,
        "readers": rows,
        "voice_to_voice_before_ms": before_ms,
        "voice_to_voice_while_ms": while_ms,
        "turns_while": len(while_turns),
        "turns": {
            "before": [asdict(t) for t in before_turns],
            "while": [asdict(t) for t in while_turns],
        },
        "outcomes": log.outcomes(),
        "tracebacks": log.tracebacks,
        "warnings_and_errors": log.loud(),
    }
    row["targets"] = {
        "every slow reader aborted (send-timeout)": all(
            r["reason"] == "send-timeout" for r in rows
        ),
        "each within the send timeout + 1 s": all(
            r["blocked_s"] is not None and r["blocked_s"] <= SEND_TIMEOUT_S + 1 for r in rows
        ),
        "live sessions back to 0": after.sessions == 0,
        "file descriptors and threads back to the start": (after.fds, after.threads)
        == (start.fds, start.threads),
        "another client's turns work meanwhile": bool(while_turns)
        and all(t.ok for t in [*before_turns, *while_turns]),
        "its voice-to-voice within 50 ms of before": before_ms is not None
        and while_ms is not None
        and while_ms <= before_ms + 50,
        "0 tracebacks": log.tracebacks == 0,
    }
    return row


# ---------------------------------------------------------------- phase 5


@dataclass
class DrainClient:
    role: str
    response_done: bool = False
    close: int | None = None
    reason: str | None = None
    closed_after_s: float | None = None
    problem: str | None = None
    began: asyncio.Event = field(default_factory=asyncio.Event)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "began"}


async def read_until_closed(client: RawClient, me: DrainClient, signalled: list[float]) -> None:
    try:
        while True:
            message = await client.recv()
            if isinstance(message, str) and json.loads(message)["type"] == "response.done":
                me.response_done = True
    except Closed as closed:
        me.close, me.reason = closed.code, closed.reason
        if signalled:
            me.closed_after_s = round(time.perf_counter() - signalled[0], 2)


async def drain_client(
    port: int,
    me: DrainClient,
    record_s: float,
    delay: float,
    signalled: list[float],
    exited: asyncio.Event,
) -> None:
    """A turn at the pace of speech, its reply read as it comes; the non-reader sends its turn
    at once and reads nothing until the server has exited."""
    await asyncio.sleep(delay)
    try:
        client = await RawClient.connect(port, rcvbuf=4096 if me.role == "non-reader" else None)
    except (Refused, Closed, OSError) as err:
        me.problem = f"connect: {err}"
        me.began.set()
        return
    reader: asyncio.Task[None] | None = None
    try:
        await client.start_turn()
        audio = frames(voiced(record_s))
        if me.role == "non-reader":
            for frame in audio:
                client.send_audio(frame)
            client.send_json({"type": "input_audio.stop"})
            await client.flush()
            me.began.set()
            await exited.wait()
            reader = asyncio.create_task(read_until_closed(client, me, []))
        else:
            reader = asyncio.create_task(read_until_closed(client, me, signalled))
            started = time.perf_counter()
            with contextlib.suppress(Closed):  # the server may close while this one speaks
                for index, frame in enumerate(audio):
                    if reader.done():
                        break
                    pace = started + index * FRAME_MS / 1000 - time.perf_counter()
                    await asyncio.sleep(max(0.0, pace))
                    client.send_audio(frame)
                    await client.flush()
                    if index == 2:
                        me.began.set()
                else:
                    client.send_json({"type": "input_audio.stop"})
                    await client.flush()
        async with asyncio.timeout(DRAIN_S + 10):
            await reader
    except Closed as closed:
        me.problem = f"closed before its turn began: {closed}"
    except TimeoutError:
        me.problem = "no close within the drain time + 10 s"
    finally:
        if reader is not None:
            reader.cancel()
        me.began.set()
        client.drop(rst=False)


async def sigterm(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    server.log.take()
    signalled: list[float] = []
    clients = [DrainClient("turn") for _ in range(args.sigterm_clients)]
    long_one, deaf = DrainClient("records past the drain time"), DrainClient("non-reader")
    exited = asyncio.Event()
    jobs = [
        drain_client(server.port, c, 1.0, i * 0.5 / max(1, len(clients)), signalled, exited)
        for i, c in enumerate(clients)
    ]
    jobs.append(drain_client(server.port, long_one, DRAIN_S + 3, 0, signalled, exited))
    jobs.append(drain_client(server.port, deaf, 0.5, 0, signalled, exited))
    tasks = [asyncio.create_task(job) for job in jobs]
    everyone = [*clients, long_one, deaf]
    async with asyncio.timeout(30):
        for c in everyone:
            await c.began.wait()
    in_flight = await server.sessions()
    signalled.append(time.perf_counter())
    server.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    readyz: int | str
    try:
        readyz = (await server.http.get("/readyz")).status_code
    except httpx.HTTPError as err:
        readyz = type(err).__name__
    try:
        late = await RawClient.connect(server.port)
        late_answer: int | str = "101 (accepted)"
        late.drop(rst=False)
    except Refused as refused:
        late_answer = refused.status
    except (Closed, OSError) as err:
        late_answer = type(err).__name__
    try:
        code = await asyncio.to_thread(server.process.wait, DRAIN_S + 15)
        exit_s: float | None = round(time.perf_counter() - signalled[0], 2)
    except subprocess.TimeoutExpired:
        exit_s, code = None, None
        server.process.kill()
        await asyncio.to_thread(server.process.wait, 10)
    exited.set()
    async with asyncio.timeout(30):
        await asyncio.gather(*tasks)
    await server.stop()
    log = server.log.take()
    drained = log.events("server.drained")
    row: dict[str, Any] = {
        "turns_in_flight": len(clients),
        "sessions_at_sigterm": in_flight,
        "response_done": sum(c.response_done for c in clients),
        "closes": dict(Counter(f"{c.close} {c.reason}" for c in clients)),
        "long_recorder": long_one.figures(),
        "non_reader": deaf.figures(),
        "readyz_after_sigterm": readyz,
        "new_session_after_sigterm": late_answer,
        "exit_s": exit_s,
        "exit_code": code,
        "drain_s": DRAIN_S,
        "server_drained": {k: drained[0].get(k) for k in ("drained", "cut", "left")}
        if drained
        else None,
        "outcomes": log.outcomes(),
        "tracebacks": log.tracebacks,
        "warnings_and_errors": log.loud(),
        "clients": [c.figures() for c in everyone],
    }
    row["targets"] = {
        "every turn in flight got response.done": row["response_done"] == len(clients),
        "every one then 1001 server shutting down": all(
            (c.close, c.reason) == (1001, "server shutting down") for c in clients
        ),
        "the turn longer than the drain got 1001": (long_one.close, long_one.reason)
        == (1001, "server shutting down"),
        "/readyz answered 503, 0.2 s after SIGTERM": readyz == 503,
        "a new session was refused with 503": late_answer == 503,
        "exit within drain_s + 2 s, code 0": exit_s is not None
        and exit_s <= DRAIN_S + 2
        and code == 0,
        "a server.drained line": bool(drained),
        "0 tracebacks": log.tracebacks == 0,
    }
    return row


# ---------------------------------------------------------------- output


def table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))


def figures_table(row: dict[str, Any], names: tuple[str, ...]) -> None:
    keys = ("rss_mib", "fds", "threads", "sessions")
    table(
        ["", "RSS MiB", "fds", "threads", "sessions"],
        [[n, *(row[n][k] for k in keys)] for n in names],
    )


def pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def print_targets(targets: dict[str, bool]) -> None:
    for name, met in targets.items():
        print(f"    {'met    ' if met else 'NOT MET'}  {name}")


def print_rounds(base: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    fig = base["figures"]
    rows = [["baseline", fig["rss_mib"], "", fig["fds"], fig["threads"], fig["sessions"]]]
    rows[0] += ["", "", base["outcomes"].get("ok", 0), "", "", base["tracebacks"], "", ""]
    rows[0] += [base["voice_to_voice_ms"]]
    for r in rounds:
        f, out = r["figures"], r["outcomes"]
        rows.append(
            [
                f"round {r['round']}",
                f["rss_mib"],
                f"{r['rss_delta_mib']:+.1f}",
                f["fds"],
                f["threads"],
                f["sessions"],
                r["duration_s"],
                out.get("disconnected", 0),
                out.get("ok", 0),
                sum(v for k, v in out.items() if k not in ("disconnected", "ok")),
                internal_errors(out),
                r["tracebacks"],
                r["stage_crashed"],
                r["turns_logged"],
                r["fresh_turn"]["voice_to_voice_ms"],
            ]
        )
    head = ["", "RSS MiB", "dRSS", "fds", "threads", "sessions", "round s", "disconnected"]
    head += ["ok", "other", "internal-error", "tracebacks", "stage.crashed", "turns logged"]
    table([*head, "fresh turn v2v ms"], rows)
    for r in rounds:
        print(
            f"  round {r['round']}: {r['turns_started']} turns started of {r['clients']}; "
            f"moments: {pairs(r['moments'])}; RST {r['resets']}, FIN {r['clients'] - r['resets']}"
            f"; settled in {r['settle_s']} s"
        )
        if r["client_problems"]:
            print(f"    the clients saw: {pairs(r['client_problems'])}")
        if r["warnings_and_errors"]:
            print(f"    server warnings and errors: {pairs(r['warnings_and_errors'])}")
        if r["bad_endings_by_moment"]:
            print(f"    by the moment of the drop: {pairs(r['bad_endings_by_moment'])}")
        print_targets(r["targets"])


def print_abusers(row: dict[str, Any]) -> None:
    figures_table(row["steps"], tuple(row["steps"]))
    n = row["clients"]
    print(
        f"  {n['oversized']} 2 MiB messages: closes {pairs(row['oversized_closes'])}, RSS "
        f"{row['oversized_rss_growth_mib']:+.1f} MiB"
    )
    print(
        f"  {n['audio_too_long']} recordings past the limit, one after another: "
        f"{pairs(row['too_long_errors'])}, {row['too_long_stayed']} stayed open; RSS "
        f"{row['too_long_rss_growth_mib']:+.1f} MiB while they stay (budget "
        f"{row['too_long_rss_budget_mib']} MiB: 0.25 each, the issue's 50 MiB for 200, plus one "
        f"{row['max_audio_s']:g} s recording)"
    )
    print(
        f"  {n['flood']} floods of {row['flood_frames_each']} bad frames at once: "
        f"{row['floods_survived']} sessions survived, the slowest took "
        f"{row['flood_seconds_max']} s, at most {row['flood_error_events_max']} error events "
        f"each; {row['flood_log_lines_per_flooder']} log lines per flood; "
        f"{row['flood_errors_dropped_logged']} dropped errors counted in input.errors_dropped"
    )
    print(
        f"  {len(row['turns_during_flood'])} turns during the floods, voice-to-voice p50 "
        f"{row['voice_to_voice_during_flood_ms']} ms (baseline {row['baseline_v2v_ms']} ms); "
        f"outcomes: {pairs(row['outcomes'])}; tracebacks {row['tracebacks']}"
    )
    print(f"  server warnings and errors: {pairs(row['warnings_and_errors'])}")
    for problem in row["problems"]:
        print(f"  problem: {problem}")
    print_targets(row["targets"])


def print_slow(row: dict[str, Any]) -> None:
    figures_table(row, ("start", "stalled", "after"))
    table(
        ["slow reader", "aborted", "reason", "blocked s", "after it stopped reading s", "ended"],
        [
            [
                r["session_id"],
                r["aborted"],
                r["reason"],
                r["blocked_s"],
                r["aborted_after_reading_stopped_s"],
                r["ended"],
            ]
            for r in row["readers"]
        ],
    )
    print(
        f"  another client's voice-to-voice p50: {row['voice_to_voice_before_ms']} ms before, "
        f"{row['voice_to_voice_while_ms']} ms while the slow readers' sends were blocked "
        f"({row['turns_while']} turns; the server went quiet {row['buffers_filled_after_s']} s "
        f"after they stopped reading); reply {row['reply_audio_mb']} MB of audio, send timeout "
        f"{row['send_timeout_s']:g} s; tracebacks {row['tracebacks']}"
    )
    print(f"  server warnings and errors: {pairs(row['warnings_and_errors'])}")
    print_targets(row["targets"])


def print_sigterm(row: dict[str, Any]) -> None:
    print(
        f"  {row['turns_in_flight']} turns in flight ({row['sessions_at_sigterm']} sessions at "
        f"SIGTERM): response.done {row['response_done']}; closes: {pairs(row['closes'])}"
    )
    for name in ("long_recorder", "non_reader"):
        c = row[name]
        when = (
            f"after {c['closed_after_s']} s"
            if c["closed_after_s"] is not None
            else "(read once the server had exited)"
        )
        problem = f"; {c['problem']}" if c["problem"] else ""
        print(f"  {c['role']}: close {c['close']} {c['reason']!r} {when}{problem}")
    print(
        f"  /readyz 0.2 s after SIGTERM: {row['readyz_after_sigterm']}; a new session: "
        f"{row['new_session_after_sigterm']}; exited after {row['exit_s']} s with code "
        f"{row['exit_code']} (drain_s {row['drain_s']:g}); server.drained "
        f"{row['server_drained']}; outcomes {pairs(row['outcomes'])}; tracebacks "
        f"{row['tracebacks']}"
    )
    print(f"  server warnings and errors: {pairs(row['warnings_and_errors'])}")
    print_targets(row["targets"])


def all_targets(report: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    for r in report["rounds"]:
        for name, met in r["targets"].items():
            yield f"round {r['round']}", name, met
    for phase in ("abusers", "slow_readers", "sigterm"):
        for name, met in report[phase]["targets"].items():
            yield phase, name, met


# ---------------------------------------------------------------- main


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "workdir": str(workdir)}
    server = await Server.start(
        workdir / "main",
        VOICE_FSM_LIMITS__SEND_TIMEOUT_S=f"{SEND_TIMEOUT_S:g}",
        VOICE_FSM_SERVER__DRAIN_S=f"{DRAIN_S:g}",
        VOICE_FSM_LIMITS__MAX_AUDIO_SECONDS=f"{args.max_audio:g}",
    )
    try:
        print(f"\n1. baseline: 3 turns, then {args.concurrency} at once")
        base = await baseline(server, args.concurrency)
        report["baseline"] = base
        start = Figures(**base["figures"])
        print(
            f"   {base['turns_ok']} of {base['turns']} turns ok, voice-to-voice "
            f"{base['voice_to_voice_ms']} ms; {pairs(asdict(start))}"
        )

        print(
            f"\n2. {args.rounds} rounds of {args.disconnects} abrupt disconnects mid-turn, "
            f"{args.concurrency} at once"
        )
        rounds: list[dict[str, Any]] = []
        before = base["figures"]
        for number in range(1, args.rounds + 1):
            row = await disconnect_round(server, number, args, rng, start, before)
            rounds.append(row)
            before = row["figures"]
            f = row["figures"]
            print(
                f"   round {number}: {row['duration_s']} s, RSS {f['rss_mib']} MiB "
                f"({row['rss_delta_mib']:+.1f}), fds {f['fds']}, threads {f['threads']}, "
                f"outcomes {pairs(row['outcomes'])}, tracebacks {row['tracebacks']}, "
                f"fresh turn {row['fresh_turn']['voice_to_voice_ms']} ms",
                flush=True,
            )
        report["rounds"] = rounds
        print()
        print_rounds(base, rounds)

        print(f"\n3. {args.abusers} oversized, audio-too-long and flooding clients")
        report["abusers"] = await abusers(server, args, start, base["voice_to_voice_ms"])
        print_abusers(report["abusers"])

        print(f"\n4. {args.slow_readers} slow readers (a second server, with a long reply)")
        report["slow_readers"] = await slow_readers(workdir / "slow", args)
        print_slow(report["slow_readers"])

        print(f"\n5. SIGTERM with {args.sigterm_clients} turns in flight (drain_s {DRAIN_S:g})")
        report["sigterm"] = await sigterm(server, args)
        print_sigterm(report["sigterm"])
    finally:
        await server.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--disconnects", type=int, default=1000, help="clients per round")
    parser.add_argument("--concurrency", type=int, default=100, help="clients at once")
    parser.add_argument("--abusers", type=int, default=50)
    parser.add_argument("--flood-frames", type=int, default=2000)
    parser.add_argument("--max-audio", type=float, default=60.0, help="max_audio_seconds")
    parser.add_argument("--slow-readers", type=int, default=3)
    parser.add_argument("--sigterm-clients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("artifacts/soak.json"))
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.logs.resolve() if args.logs else Path(tmp)
        try:
            report = asyncio.run(soak(args, workdir))
        except BaseException:
            for log in sorted(workdir.glob("*/server.log")):
                print(f"--- the end of {log} ---\n{log.read_text(errors='replace')[-3000:]}")
            raise
    report["seconds"] = round(time.perf_counter() - started, 1)

    missed = [(phase, name) for phase, name, met in all_targets(report) if not met]
    report["targets_missed"] = [f"{phase}: {name}" for phase, name in missed]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    total = sum(1 for _ in all_targets(report))
    print(f"\nsummary ({report['seconds']} s; figures in {args.out}):")
    print(f"  {total - len(missed)} of {total} targets met")
    for phase, name in missed:
        print(f"  NOT MET  {phase}: {name}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
