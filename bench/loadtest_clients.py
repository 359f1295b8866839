"""The load test's talking users, in a process of their own (`client_process`): each session
connects once and talks turn after turn, push-to-talk, as a person at a microphone would.

A turn: ``input_audio.start``, the question's audio in `FRAME_MS` frames, each sent once it
has been "recorded" (real time), ``input_audio.stop``, then everything the server sends is read
until ``turn.metrics`` or ``error``. The reply's audio is counted, never played, but the user
waits as if it were: until it would have finished playing (from its first byte, for as long as
it lasts), then a pause drawn from `PAUSE_S` before the next question. The WebSocket is opened
as a browser opens it (the websockets library offers permessage-deflate, as browsers do;
LOADTEST_NO_DEFLATE=1 leaves it out).

The process obeys its pipe: ``("sessions", n, ramp_s)`` grows to `n` sessions, started evenly
over `ramp_s`; ``("report",)`` answers with the turns finished since the last report, the open
sessions and the event loop's lag; ``("stop",)`` closes every session and ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

FRAME_MS = 100
BYTES_PER_S = 48_000  # PCM16 at 24 kHz
PAUSE_S = (1.0, 3.0)
"""From the end of the reply's playing to the next question: a user thinking."""
TURN_TIMEOUT_S = 30.0
LAG_TICK_S = 0.01
COMPRESSION: str | None = None if os.environ.get("LOADTEST_NO_DEFLATE") else "deflate"


@dataclass
class Turn:
    """One finished turn, as the client saw it (ms; None where it never came)."""

    ended_at: float  # time.time()
    ok: bool
    error: str | None
    client_voice_to_voice_ms: float | None
    server_voice_to_voice_ms: float | None
    reply_audio_bytes: int
    played_until: float = 0.0
    """`time.perf_counter()` when the reply would have finished playing."""


@dataclass
class Tally:
    """What the process gathered since its last report."""

    turns: list[Turn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)

    def take(self) -> Tally:
        taken = Tally(self.turns, self.errors, self.lag_ms)
        self.turns, self.errors, self.lag_ms = [], [], []
        return taken


def frames(pcm: bytes, frame_ms: int = FRAME_MS) -> Iterator[bytes]:
    size = frame_ms * BYTES_PER_S // 1000
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


async def watch_lag(out: Tally, stop: asyncio.Event) -> None:
    """How late this event loop wakes from a `LAG_TICK_S` sleep: its own share of a delay."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        out.lag_ms.append((time.perf_counter() - before - LAG_TICK_S) * 1000)


async def _event(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON event, skipping audio."""
    while True:
        message = await ws.recv()
        if isinstance(message, str):
            event: dict[str, Any] = json.loads(message)
            return event


async def talk_turn(ws: ClientConnection, pcm: bytes) -> Turn:
    """One push-to-talk turn over an open session."""
    await ws.send('{"type": "input_audio.start"}')
    while True:
        event = await _event(ws)
        if event.get("type") == "error":
            return Turn(time.time(), False, f"error {event.get('code')}", None, None, 0)
        if event.get("type") == "state" and event.get("state") == "recording":
            break
    start = time.perf_counter()
    for index, frame in enumerate(frames(pcm)):
        # A frame goes out once it has been spoken, as a microphone's would.
        await asyncio.sleep(max(0.0, start + (index + 1) * FRAME_MS / 1000 - time.perf_counter()))
        await ws.send(frame)
    await ws.send('{"type": "input_audio.stop"}')
    stopped = time.perf_counter()
    first_audio: float | None = None
    audio = 0
    while True:
        message = await ws.recv()
        if isinstance(message, bytes):
            first_audio = first_audio or time.perf_counter()
            audio += len(message)
            continue
        event = json.loads(message)
        kind = event.get("type")
        if kind == "error":
            return Turn(time.time(), False, f"error {event.get('code')}", None, None, audio)
        if kind == "turn.metrics":
            client_ms = None if first_audio is None else (first_audio - stopped) * 1000
            server_ms = event.get("voice_to_voice_ms")
            ok = client_ms is not None and server_ms is not None
            why = None if ok else "no reply audio"
            played = (first_audio or time.perf_counter()) + audio / BYTES_PER_S
            return Turn(time.time(), ok, why, client_ms, server_ms, audio, played)


async def run_session(url: str, questions: list[bytes], tally: Tally, rng: random.Random) -> None:
    """A user who stays: one connection, turns until cancelled, asking `questions` in turn
    from a random one. A failed turn is counted and the session goes on; a lost connection
    ends it (counted too)."""
    limit = TURN_TIMEOUT_S + max(len(pcm) for pcm in questions) / BYTES_PER_S
    asked, played = rng.randrange(len(questions)), 0.0
    try:
        async with connect(
            url, open_timeout=TURN_TIMEOUT_S, max_size=None, compression=COMPRESSION
        ) as ws:
            created = await asyncio.wait_for(_event(ws), TURN_TIMEOUT_S)
            if created.get("type") != "session.created":
                tally.errors.append(f"expected session.created, got {created.get('type')}")
                return
            while True:
                await asyncio.sleep(rng.uniform(*PAUSE_S) + max(0.0, played - time.perf_counter()))
                try:
                    async with asyncio.timeout(limit):
                        turn = await talk_turn(ws, questions[asked % len(questions)])
                except TimeoutError:
                    turn = Turn(time.time(), False, f"timed out after {limit:.0f} s", None, None, 0)
                asked += 1
                played = turn.played_until
                tally.turns.append(turn)
                if turn.error:
                    tally.errors.append(turn.error)
    except (OSError, WebSocketException, TimeoutError) as err:
        tally.errors.append(f"session: {type(err).__name__}: {err}")


async def _serve(conn: Connection, url: str, questions: list[bytes], seed: int) -> None:
    tally, rng = Tally(), random.Random(seed)
    sessions: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_lag(tally, stop))
    starter: asyncio.Task[None] | None = None

    async def grow(target: int, ramp_s: float) -> None:
        adding = target - len(sessions)
        for index in range(adding):
            sessions.append(asyncio.create_task(run_session(url, questions, tally, rng)))
            await asyncio.sleep(ramp_s / max(1, adding) if index < adding - 1 else 0)

    try:
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "sessions":
                if starter is not None:
                    await starter
                starter = asyncio.create_task(grow(command[1], command[2]))
            elif command[0] == "report":
                taken = tally.take()
                alive = sum(1 for task in sessions if not task.done())
                conn.send(
                    {
                        "turns": [vars(turn) for turn in taken.turns],
                        "errors": taken.errors,
                        "lag_ms": taken.lag_ms,
                        "sessions": alive,
                    }
                )
            else:
                break
    finally:
        if starter is not None:
            starter.cancel()
        for task in sessions:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*sessions, return_exceptions=True)
        stop.set()
        await watcher
        conn.send("stopped")


def client_process(conn: Connection, url: str, questions: list[bytes], seed: int) -> None:
    """The process's target: serve the pipe's commands until ``("stop",)``."""
    # The sessions closed at the stop make asyncio's transports complain; errors that matter
    # are counted in the tally.
    logging.disable(logging.ERROR)
    asyncio.run(_serve(conn, url, questions, seed))
