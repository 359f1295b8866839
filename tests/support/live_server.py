"""A `voice-fsm serve` with the fake providers in a subprocess, and the clients that drive it:
real WebSocket clients, and bare sockets where a client must misbehave in ways a library will
not. Shared by the tests of limits and of the drain on shutdown.

Memory is the server's resident set (VmRSS in /proc/<pid>/status); its peak (VmHWM) is reset
before a measurement, so a message buffered whole and freed again still shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from support.servers import console_script, fake_env, free_port, running_server

MIB = 1024 * 1024
SECOND_OF_AUDIO = 48_000  # PCM16 mono at 24 kHz
TIMEOUT = 10.0


# ---------------------------------------------------------------------------- the server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _status(self, name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        raise KeyError(name)

    def rss_mib(self) -> float:
        return self._status("VmRSS") / 1024

    def peak_mib(self) -> float:
        return self._status("VmHWM") / 1024

    def reset_peak(self) -> None:
        """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def threads(self) -> int:
        return self._status("Threads")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.log()
            if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
        ]

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=5) as http:
            return await http.get(path)

    async def sessions(self) -> int:
        return int((await self.get("/healthz")).json()["sessions"])

    async def wait_for_sessions(self, count: int, seconds: float = 5.0) -> float:
        """Wait until /healthz counts `count` live sessions; how long that took."""
        started = time.monotonic()
        async with asyncio.timeout(seconds):
            while await self.sessions() != count:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.02)
        return time.monotonic() - started


@contextmanager
def fake_server(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """`voice-fsm serve` with the fake providers; `settings` are VOICE_FSM_ names without the
    prefix (LIMITS__IDLE_TIMEOUT_S="1")."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    env = fake_env(**{f"VOICE_FSM_{k}": v for k, v in settings.items()})
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=tmp_path,
        log=log,
    ) as process:
        yield Server(process, port, log)


def log_time(record: dict[str, Any]) -> float:
    """A log line's timestamp as Unix time (comparable with time.time())."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def assert_clean_log(server: Server) -> None:
    text = server.log_text()
    assert "Traceback" not in text, text[-3000:]
    assert not server.events("stage.crashed"), server.events("stage.crashed")
    assert not server.events("session.crashed"), server.events("session.crashed")
    assert not server.events("turn.completed", outcome="internal-error")


# ---------------------------------------------------------------------------- clients


async def connect(server: Server, **options: Any) -> tuple[ClientConnection, str]:
    """A WebSocket client and its session id (from session.created)."""
    ws = await websockets.connect(server.ws_url, open_timeout=TIMEOUT, **options)
    created = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert created["type"] == "session.created", created
    return ws, str(created["session_id"])


async def receive(ws: ClientConnection, seconds: float = TIMEOUT) -> dict[str, Any] | bytes:
    message = await asyncio.wait_for(ws.recv(), seconds)
    return message if isinstance(message, bytes) else json.loads(message)


async def until(
    ws: ClientConnection, kind: str, seconds: float = TIMEOUT, **fields: Any
) -> list[dict[str, Any] | bytes]:
    """Everything received up to and including the first `kind` event matching `fields`."""
    seen: list[dict[str, Any] | bytes] = []
    async with asyncio.timeout(seconds):
        while True:
            item = await receive(ws, seconds)
            seen.append(item)
            if (
                isinstance(item, dict)
                and item["type"] == kind
                and all(item.get(k) == v for k, v in fields.items())
            ):
                return seen


async def until_closed(ws: ClientConnection, seconds: float = TIMEOUT) -> list[str]:
    """The types of the events received until the server closes the connection."""
    kinds: list[str] = []
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionClosed):
            while True:
                item = await receive(ws, seconds)
                if isinstance(item, dict):
                    kinds.append(item["type"])
    return kinds


async def say(ws: ClientConnection, ms: int = 300) -> None:
    """input_audio.start and `ms` of audio (100 ms frames); not the stop."""
    await ws.send(json.dumps({"type": "input_audio.start"}))
    for _ in range(ms // 100):
        await ws.send(b"\x10\x00" * (SECOND_OF_AUDIO // 20))


async def stop(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "input_audio.stop"}))


async def time_to_first_audio(ws: ClientConnection, *, cancel: bool = False) -> float:
    """One turn: seconds from input_audio.stop to the first byte of the reply's audio. With
    `cancel` the reply is cancelled there (a long reply need not be read to its end); else
    the turn runs to its turn.metrics."""
    await say(ws)
    started = time.monotonic()
    await stop(ws)
    latency = None
    async with asyncio.timeout(TIMEOUT):
        while True:
            item = await receive(ws)
            if isinstance(item, bytes):
                if latency is None:
                    latency = time.monotonic() - started
                    if cancel:
                        await ws.send(json.dumps({"type": "response.cancel"}))
                continue
            assert item["type"] != "error", item
            if (
                cancel
                and latency is not None
                and (item["type"], item.get("state")) == ("state", "idle")
            ):
                break
            if item["type"] == "turn.metrics":
                break
    assert latency is not None
    return latency


class BareClient:
    """A WebSocket client on a bare socket, for what a library will not do: it never reads
    after the handshake (a small receive buffer fills at once), or it vanishes without a
    close frame. The frames themselves come from websockets' sans-I/O protocol."""

    def __init__(self, server: Server, *, receive_buffer: int = 4096) -> None:
        self.server_port = server.port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window the server sees is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        self.protocol = ClientProtocol(parse_uri(server.ws_url))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.handshake_exc is None and not self.protocol.events_received():
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            self.protocol.receive_data(data)
            if self.protocol.handshake_exc is not None:
                raise self.protocol.handshake_exc

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def send_bytes(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def flood(self, frame: bytes, *, limit: int, stalled_s: float = 0.5) -> int:
        """Send `frame` (one binary message, encoded once) again and again until `limit` bytes
        went out or the server stopped taking them for `stalled_s`; how many bytes went out."""
        self.protocol.send_binary(frame)
        data = b"".join(self.protocol.data_to_send())
        self.sock.settimeout(stalled_s)
        sent = 0
        try:
            while sent < limit:
                view = memoryview(data)
                while view:
                    count = self.sock.send(view)
                    sent += count
                    view = view[count:]
        except (TimeoutError, ConnectionError):  # stalled, or dropped meanwhile
            pass
        return sent

    def start_turn(self, ms: int = 300) -> None:
        self.send_text(json.dumps({"type": "input_audio.start"}))
        self.send_bytes(b"\x10\x00" * (SECOND_OF_AUDIO * ms // 2000))
        self.send_text(json.dumps({"type": "input_audio.stop"}))

    def unread(self) -> int:
        """Bytes waiting in the socket's receive buffer."""
        import fcntl
        import termios

        buffer = bytearray(4)
        fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, buffer)
        return int.from_bytes(buffer, "little")

    def server_send_queue(self) -> int | None:
        """Bytes the server's kernel holds for this client, unacknowledged (/proc/net/tcp);
        None once the server's end of the connection is gone."""
        local = f":{self.server_port:04X}"
        remote = f":{self.sock.getsockname()[1]:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(local) and fields[2].endswith(remote):
                return int(fields[4].split(":")[0], 16)
        return None

    async def until_server_blocked(self, seconds: float = TIMEOUT) -> int:
        """Wait until the server's send queue toward this client stops growing: the server
        has given the kernel all it takes, and the rest waits in the server. Its size."""
        async with asyncio.timeout(seconds):
            last = -1
            while (queued := self.server_send_queue() or 0) != last or not queued:
                last = queued
                await asyncio.sleep(0.3)
        return queued

    def was_reset(self, seconds: float) -> bool:
        """Whether the server dropped the connection: its data discarded, then a reset or EOF
        within `seconds`."""
        self.sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def many(server: Server, count: int, batch: int = 100) -> AsyncIterator[list[str]]:
    """`count` open WebSocket clients (opened `batch` at a time); their session ids. They are
    dropped without a close handshake on leaving, the quickest way to end many."""
    clients: list[ClientConnection] = []
    ids: list[str] = []
    try:
        for first in range(0, count, batch):
            opened = await asyncio.gather(
                *(connect(server) for _ in range(min(batch, count - first)))
            )
            clients += [ws for ws, _ in opened]
            ids += [session_id for _, session_id in opened]
        yield ids
    finally:
        for ws in clients:
            ws.transport.abort()


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        if limit < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")


def report(name: str, **figures: object) -> str:
    line = f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n{line}")
    return line
