"""The load test's fake providers: OpenAI's HTTP API and Realtime WebSocket on one port, with a
`LatencyProfile`'s latencies, in `processes` processes that share the port (SO_REUSEPORT: the
kernel spreads the server's connections over them), so the fakes are not the bottleneck.

Unlike the tests' fakes, these keep no record of what they receive (`Forgotten`): hours of
uploads and audio events would fill the memory, and the bench reads the server's figures, not
the fakes'. The fake speech is computed once per text (`speech_pcm` cached). Each process
measures how late its event loop wakes up, which is how late its answers go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import socket
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from loadtest_clients import Tally, watch_lag
from loadtest_figures import quantiles

from voice_fsm.testing import fake_openai, fake_realtime
from voice_fsm.testing.latency_profile import (
    LatencyProfile,
    fake_openai_config,
    fake_realtime_config,
)
from voice_fsm.testing.threaded_server import KEEP_ALIVE_S


class Forgotten(list[Any]):
    """A record that keeps nothing but its length (the fakes number connections by it)."""

    def __init__(self) -> None:
        super().__init__()
        self.length = 0

    def append(self, item: Any) -> None:
        self.length += 1

    def __len__(self) -> int:
        return self.length


class Handshakes(Forgotten):
    """The Realtime connections the fakes accepted, counted by kind (transcription, speech)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: Counter[str] = Counter()

    def append(self, item: Any) -> None:
        super().append(item)
        live = getattr(item, "query", {}).get("intent") == "transcription"
        self.kinds["transcription" if live else "speech"] += 1


def _app(profile: LatencyProfile, handshakes: Handshakes) -> Any:
    speech = functools.lru_cache(maxsize=64)(fake_openai.speech_pcm)
    fake_openai.speech_pcm = speech
    fake_realtime.speech_pcm = speech  # type: ignore[attr-defined]  # its own import of it
    config = fake_openai_config(profile)
    config.requests = Forgotten()
    realtime = fake_realtime_config(profile)
    realtime.events, realtime.connections, realtime.closed = Forgotten(), handshakes, Forgotten()
    return fake_openai.create_fake_openai_app(config, realtime=realtime)


async def _serve(profile: LatencyProfile, port: int, conn: Connection) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    handshakes = Handshakes()
    config = uvicorn.Config(
        _app(profile, handshakes),
        ws="websockets-sansio",
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    lag = Tally()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_lag(lag, stop))
    while not server.started:
        if serving.done():
            raise SystemExit("the fakes did not start")
        await asyncio.sleep(0.01)
    conn.send("ready")
    while (await asyncio.to_thread(conn.recv)) == "report":
        conn.send({"lag_ms": lag.take().lag_ms, "handshakes": dict(handshakes.kinds)})
        handshakes.kinds.clear()
    server.should_exit = True
    stop.set()
    await asyncio.gather(serving, watcher)


def fake_process(profile: LatencyProfile, port: int, conn: Connection) -> None:
    # The servers' connections cut at the end make uvicorn log disconnects; a fault that
    # matters shows in the servers' turns.
    logging.disable(logging.ERROR)
    asyncio.run(_serve(profile, port, conn))


@dataclass
class FakeProviders:
    base_url: str
    processes: list[BaseProcess]
    pipes: list[Connection]

    @classmethod
    def start(cls, profile: LatencyProfile, port: int, count: int) -> FakeProviders:
        context = multiprocessing.get_context("spawn")
        processes: list[BaseProcess] = []
        pipes: list[Connection] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=fake_process, args=(profile, port, theirs))
            process.start()
            processes.append(process)
            pipes.append(ours)
        deadline = time.monotonic() + 60
        for waiting, pipe in zip(processes, pipes, strict=True):
            while not pipe.poll(0.1):
                if not waiting.is_alive() or time.monotonic() > deadline:
                    for each in processes:
                        each.kill()
                    raise SystemExit("the fake providers did not start")
            pipe.recv()
        return cls(f"http://127.0.0.1:{port}/v1", processes, pipes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def report(self) -> dict[str, Any]:
        """Since the last call: how late the fakes' event loops woke up (ms), and the Realtime
        connections they accepted by kind."""
        lags: list[float] = []
        handshakes: Counter[str] = Counter()
        for pipe in self.pipes:
            pipe.send("report")
            answer = pipe.recv()
            lags += answer["lag_ms"]
            handshakes.update(answer["handshakes"])
        return {"loop_lag_ms": quantiles(lags), "realtime_handshakes": dict(handshakes)}

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
