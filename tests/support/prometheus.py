"""A real `voice-fsm serve` (fake providers) with turns made on it, and Debian's real Prometheus
scraping it.

Prometheus is `/usr/bin/prometheus` (`apt-get install prometheus`; .ci/run installs it). A test
skips without it, except under CI=true, where it fails: CI must run these tests.

The one fixture other tests reuse is `prometheus_with_turns(tmp_path)`; the pieces it is made
of (a server with fake providers, a client that takes turns, Prometheus and its HTTP API) are
here too, for tests that need only some of them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from voice_fsm.audio import bytes_for_ms
from voice_fsm.metrics import BUCKETS

from support.servers import (
    clean_env,
    console_script,
    fake_env,
    find_debian_program,
    free_port,
    running_server,
    stop_process,
)

JOB = "voice-fsm"
SCRAPE_INTERVAL_S = 1
OK_TURNS = 5
FAILING_TURNS = 1
FAILING_AUDIO_MS = 40
"""Shorter than the 100 ms a recording needs: such a turn fails with no-audio (stage input)."""


def find_prometheus() -> str:
    """The path of Debian's prometheus, or skip (fail under CI=true) when it is missing."""
    return find_debian_program("prometheus")


def bucket_index(seconds: float) -> int:
    """The index of the metrics' histogram bucket holding `seconds` (len(BUCKETS) for +Inf)."""
    return next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))


# ---------------------------------------------------------------- the server and its turns


def fake_server_env(**extra: str) -> dict[str, str]:
    """A server with the fake providers, JSON logs and stages of different lengths."""
    return fake_env(
        VOICE_FSM_FAKE__STT_DELAY="0.08",
        VOICE_FSM_FAKE__LLM_FIRST_TOKEN_DELAY="0.12",
        VOICE_FSM_FAKE__LLM_TOKEN_DELAY="0.01",
        VOICE_FSM_FAKE__TTS_FIRST_AUDIO_DELAY="0.03",
        **extra,
    )


@dataclass
class FakeServer:
    url: str
    """http://127.0.0.1:PORT"""
    log: Path
    """Its stdout and stderr: JSON lines, `turn.completed` among them."""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def turn_lines(self) -> list[dict[str, Any]]:
        """The `turn.completed` lines written so far, parsed."""
        return turn_lines(self.log)


def turn_lines(log: Path) -> list[dict[str, Any]]:
    """The `turn.completed` lines of a server's JSON log, parsed."""
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("event") == "turn.completed":
                lines.append(line)
    return lines


@contextmanager
def fake_server(workdir: Path, port: int | None = None, **env: str) -> Iterator[FakeServer]:
    """`voice-fsm serve` with the fake providers (`fake_server_env` plus `env`) on `port` (a
    free one by default)."""
    port = port or free_port()
    log = workdir / "server.log"
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=fake_server_env(**env),
        cwd=workdir,
        log=log,
    ):
        yield FakeServer(f"http://127.0.0.1:{port}", log)


class VoiceClient:
    """One session over a real WebSocket, taking push-to-talk turns as a client would."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.created = self.next_event()
        assert self.created["type"] == "session.created", self.created

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON event (binary audio frames are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(message, str):
                event: dict[str, Any] = json.loads(message)
                return event

    def until(self, kind: str, **fields: Any) -> dict[str, Any]:
        while True:
            event = self.next_event()
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event

    def start(self) -> None:
        self.ws.send(json.dumps({"type": "input_audio.start"}))
        self.until("state", state="recording")

    def turn(self, audio_ms: int = 400) -> dict[str, Any]:
        """One turn of `audio_ms` of audio: its `turn.metrics`, or its `error` for a failed
        turn (returned once the session is idle again, so the turn is recorded)."""
        self.start()
        chunk = bytes_for_ms(20)
        for _ in range(max(1, audio_ms // 20)):
            self.ws.send(b"\x10\x00" * (chunk // 2))
        self.ws.send(json.dumps({"type": "input_audio.stop"}))
        while True:
            event = self.next_event()
            if event["type"] == "turn.metrics":
                return event
            if event["type"] == "error":
                self.until("state", state="idle")
                return event


@contextmanager
def voice_client(ws_url: str, headers: dict[str, str] | None = None) -> Iterator[VoiceClient]:
    with connect(ws_url, additional_headers=headers, open_timeout=10) as ws:
        yield VoiceClient(ws)


@dataclass
class Turns:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """The `turn.metrics` events of the good turns."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """The `error` events of the failing turns."""

    def values_ms(self, name: str) -> list[int]:
        """`name`'s figure (e.g. voice_to_voice_ms) of each good turn that has it."""
        return [m[name] for m in self.metrics if m.get(name) is not None]


def take_turns(ws_url: str, ok: int = OK_TURNS, failing: int = FAILING_TURNS) -> Turns:
    """`ok` good turns, then `failing` turns too short to transcribe (no-audio), in one session."""
    turns = Turns()
    with voice_client(ws_url) as client:
        for _ in range(ok):
            event = client.turn()
            assert event["type"] == "turn.metrics", event
            turns.metrics.append(event)
        for _ in range(failing):
            event = client.turn(audio_ms=FAILING_AUDIO_MS)
            assert event["type"] == "error", event
            turns.errors.append(event)
    return turns


# ---------------------------------------------------------------- Prometheus


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error."""


@dataclass
class Prometheus:
    url: str
    """http://127.0.0.1:PORT"""
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query through /api/v1/query: its result (a vector's samples)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{expr}: {response.status_code} {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The value of a query giving one sample, None when it gives none."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_until(
        self, expr: str, check: Callable[[float | None], bool], timeout: float = 15.0
    ) -> float | None:
        """Poll `expr` until `check(its value)`: for what the next scrapes will bring."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.scalar(expr)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{expr} = {value} after {timeout:g} s\n--- prometheus ---\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.2)


def write_config(path: Path, targets: Sequence[str], headers_token: str | None = None) -> None:
    """A Prometheus config scraping `targets` (host:port) every second as job `JOB`."""
    auth = (
        f"    authorization:\n      type: Bearer\n      credentials: {headers_token}\n"
        if headers_token
        else ""
    )
    listed = ", ".join(f"'{target}'" for target in targets)
    path.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL_S}s\n"
        "scrape_configs:\n"
        f"  - job_name: '{JOB}'\n"
        f"    scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        "    scrape_timeout: 1s\n"
        f"{auth}"
        f"    static_configs:\n      - targets: [{listed}]\n"
    )


@contextmanager
def running_prometheus(
    workdir: Path, targets: Sequence[str], bearer: str | None = None
) -> Iterator[Prometheus]:
    """Debian's prometheus on a free loopback port, scraping `targets` every second, with its
    data in `workdir` (skips, or fails under CI=true, when it is not installed)."""
    write_config(workdir / "prometheus.yml", targets, bearer)
    with prometheus_with_config(workdir) as prometheus:
        yield prometheus


@contextmanager
def prometheus_with_config(workdir: Path) -> Iterator[Prometheus]:
    """Debian's prometheus on a free loopback port with the config in `workdir`/prometheus.yml
    and its data in `workdir`."""
    binary = find_prometheus()
    config = workdir / "prometheus.yml"
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            cwd=workdir,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with code {process.returncode}\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus was not ready within 30 s\n" + log.read_text())
            time.sleep(0.1)
        yield Prometheus(url, log)
    finally:
        stop_process(process)


# ---------------------------------------------------------------- the fixture other tests reuse


@dataclass
class PrometheusWithTurns:
    prometheus_url: str
    """Prometheus's base URL (http://127.0.0.1:PORT); its HTTP API is under /api/v1/."""
    server_url: str
    """The scraped `voice-fsm serve` (http://127.0.0.1:PORT), still running: /metrics, /ws."""
    server_log: Path
    """The server's JSON log: one `turn.completed` line per turn made."""
    turns: Turns
    """The turns' `turn.metrics` (5) and `error` (1) events, as the client received them."""
    prometheus: Prometheus
    """`query`, `scalar` and `wait_until` on that Prometheus."""


@contextmanager
def prometheus_with_turns(tmp_path: Path) -> Iterator[PrometheusWithTurns]:
    """Debian's Prometheus scraping a real `voice-fsm serve` (fake providers) every second,
    after 5 good turns and 1 failing turn (no-audio, stage input) of one session.

    On entry both are running, Prometheus scraped the server once before the turns and at least
    once after all six (`sum(voice_fsm_turns_total{job="voice-fsm"})` is 6), so
    `rate(...[1m])` covers every turn. The metrics carry the labels job="voice-fsm" and
    instance="127.0.0.1:PORT". Both are stopped on exit. Skips (fails under CI=true) without
    /usr/bin/prometheus.
    """
    port = free_port()
    # Prometheus first: it starts scraping only some seconds after it is ready, time in which
    # the server starts.
    with (
        running_prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prometheus,
        fake_server(tmp_path, port) as server,
    ):
        # The latency series exist at zero from the start: one scrape of them before the
        # turns lets a rate count the first turn too.
        prometheus.wait_until(f'up{{job="{JOB}"}}', lambda v: v == 1)
        prometheus.wait_until(
            f'count(voice_fsm_voice_to_voice_seconds_count{{job="{JOB}"}})',
            lambda v: v is not None and v >= 1,
        )
        turns = take_turns(server.ws_url)
        total = len(turns.metrics) + len(turns.errors)
        prometheus.wait_until(f'sum(voice_fsm_turns_total{{job="{JOB}"}})', lambda v: v == total)
        yield PrometheusWithTurns(
            prometheus_url=prometheus.url,
            server_url=server.url,
            server_log=server.log,
            turns=turns,
            prometheus=prometheus,
        )
