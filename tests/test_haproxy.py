"""Many processes, one address: Debian's HAProxy, with the shipped deploy/haproxy.cfg, in front
of two real `voice-fsm serve` processes (fake providers that take seconds per turn).

Sessions are spread over both processes. A rolling restart's SIGTERM to one of them while
every session talks drains it: its /readyz answers 503 while its turns are still in flight,
HAProxy's check marks it DOWN, its turns in flight finish and its sessions are then closed with
1001, and every new session opened meanwhile through HAProxy succeeds on the other process (a
handshake the draining process refuses with 503 is retried there by HAProxy, never shown to the
client). No turn is lost silently: each one a client started either completes or ends in a
close with 1001, which tells the client to reconnect.

The processes run deploy/voice-fsm@.service's command line and environment, and are stopped
with its KillSignal, within its TimeoutStopSec. Which process a session is on: its session id
(from `session.created`) in that process's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from support.haproxy import (
    SHIPPED_CONFIG,
    SHIPPED_UNIT,
    HAProxy,
    Unit,
    check_config,
    derived_config,
    find_haproxy,
    running_haproxy,
    shipped_unit,
    unit_settings,
)
from support.live_server import (
    TIMEOUT,
    Server,
    assert_clean_log,
    receive,
    report,
    say,
    stop,
)
from support.servers import (
    console_script,
    fake_env,
    find_debian_program,
    free_port,
    running_server,
)

pytestmark = pytest.mark.integration

SHUTDOWN = (1001, "server shutting down")
DRAIN_S = 10.0  # the default; turns here take about 3 s
# Realistic latencies: the reply's ~2 s of speech streams at real-time pace, so a turn lasts
# about 3 s and a drain has turns in flight for seconds.
# (What an operator's /etc/voice-fsm/env would hold; the unit's own Environment= lines come first.)
SETTINGS = {
    "SERVER__DRAIN_S": str(DRAIN_S),
    "LIMITS__MAX_SESSIONS_PER_CLIENT": "200",  # every client here has the same address
    "FAKE__REPLY": "The capital of France is Paris, a city on the Seine.",
    "FAKE__STT_DELAY": "0.2",
    "FAKE__LLM_FIRST_TOKEN_DELAY": "0.3",
    "FAKE__LLM_TOKEN_DELAY": "0.02",
    "FAKE__TTS_FIRST_AUDIO_DELAY": "0.2",
    "FAKE__TTS_CHUNK_DELAY": "0.1",
}
SESSIONS = 40
NEW_SESSIONS = 20  # opened through HAProxy while one process drains, one every NEW_EVERY_S
NEW_EVERY_S = 0.2


@dataclass
class Talker:
    """A client talking through HAProxy: turn after turn (or `turns` of them)."""

    ws: ClientConnection
    session_id: str
    stops: list[float] = field(default_factory=list)  # when each turn's input_audio.stop went
    completed: int = 0  # turns whose turn.metrics arrived
    working: bool = False  # the server said it took the current turn (state: recording)
    errors: list[dict[str, Any]] = field(default_factory=list)
    close: tuple[int | None, str | None] | None = None  # once the server closed the connection

    @property
    def in_flight(self) -> bool:
        return len(self.stops) > self.completed

    async def talk(self, keep_talking: asyncio.Event, turns: int | None = None) -> None:
        """Turns until the server closes the connection, `keep_talking` is cleared or `turns`
        are done; a turn ends with its turn.metrics (the reply's audio and text all came)."""
        try:
            while keep_talking.is_set() and (turns is None or self.completed < turns):
                await say(self.ws)
                await stop(self.ws)
                self.stops.append(time.monotonic())
                while True:
                    item = await receive(self.ws, TIMEOUT)
                    if isinstance(item, bytes):
                        continue
                    if item["type"] == "error":
                        self.errors.append(item)
                    if (item["type"], item.get("state")) == ("state", "recording"):
                        self.working = True
                    if item["type"] == "turn.metrics":
                        self.completed += 1
                        self.working = False
                        break
        except ConnectionClosed:
            self.close = (self.ws.close_code, self.ws.close_reason)

    def lost_turns(self) -> int:
        """Turns started but neither completed nor ended by a close the client can act on."""
        unanswered = len(self.stops) - self.completed
        return unanswered if self.close != SHUTDOWN else max(0, unanswered - 1)


async def until_closed(talker: Talker) -> tuple[int | None, str | None]:
    """Wait for the server to close the connection; its close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await receive(talker.ws)
    return talker.ws.close_code, talker.ws.close_reason


async def open_session(proxy: HAProxy) -> Talker:
    ws = await websockets.connect(proxy.ws_url, open_timeout=TIMEOUT)
    created = await receive(ws)
    assert isinstance(created, dict), created
    assert created["type"] == "session.created", created
    return Talker(ws, str(created["session_id"]))


def on(server: Server, talkers: list[Talker]) -> list[Talker]:
    """The talkers whose session `server` runs (its log says so)."""
    started = {r["session_id"] for r in server.events("session.started")}
    return [t for t in talkers if t.session_id in started]


async def placed(servers: tuple[Server, Server], talkers: list[Talker]) -> tuple[int, int]:
    """How many of `talkers` each server runs, once each session is in one of their logs (a
    process logs session.started just after it sends session.created)."""

    def counts() -> tuple[int, int]:
        return len(on(servers[0], talkers)), len(on(servers[1], talkers))

    async with asyncio.timeout(5):
        while sum(counts()) < len(talkers):  # noqa: ASYNC110 (other processes)
            await asyncio.sleep(0.02)
    return counts()


@contextmanager
def unit_server(
    tmp_path: Path, name: str, port: int | None = None
) -> Iterator[tuple[Server, Unit]]:
    """`voice-fsm serve` (fake providers) as deploy/voice-fsm@.service runs it, on `port` (a
    free one by default)."""
    port = port or free_port()
    unit = shipped_unit(port, tmp_path / "cache")
    env = fake_env(**{**unit.environment, **{f"VOICE_FSM_{k}": v for k, v in SETTINGS.items()}})
    log = tmp_path / f"{name}.log"
    with running_server(
        unit.command, ready_url=f"http://127.0.0.1:{port}/healthz", env=env, cwd=tmp_path, log=log
    ) as process:
        yield Server(process, port, log), unit


@contextmanager
def two_servers_behind_haproxy(tmp_path: Path) -> Iterator[tuple[Server, Server, HAProxy, Unit]]:
    with ExitStack() as stack:
        first, unit = stack.enter_context(unit_server(tmp_path, "fsm1"))
        second, _ = stack.enter_context(unit_server(tmp_path, "fsm2"))
        proxy = stack.enter_context(
            running_haproxy(tmp_path, [("fsm1", first.port), ("fsm2", second.port)])
        )
        yield first, second, proxy, unit


async def readyz_draining(server: Server) -> float:
    """Poll the process itself (not through HAProxy) until /readyz says 503 draining; when."""
    async with asyncio.timeout(5):
        while True:
            ready = await server.get("/readyz")
            if ready.status_code == 503 and ready.json()["status"] == "draining":
                return time.monotonic()
            await asyncio.sleep(0.01)


async def marked(proxy: HAProxy, name: str, status: str) -> float:
    """When HAProxy's check marked server `name` with `status` (UP, DOWN)."""
    async with asyncio.timeout(DRAIN_S):
        while proxy.status()[name] != status:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.02)
    return time.monotonic()


async def exited(server: Server) -> float:
    async with asyncio.timeout(DRAIN_S + 5):
        while server.process.poll() is None:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.02)
    return time.monotonic()


def test_haproxy_accepts_the_shipped_config_and_the_derived_one(tmp_path: Path) -> None:
    haproxy = find_haproxy()
    shipped = check_config(haproxy, SHIPPED_CONFIG)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    derived = tmp_path / "haproxy.cfg"
    derived.write_text(derived_config(8080, [("a", 8001), ("b", 8002)], tmp_path / "s.sock"))
    checked = check_config(haproxy, derived)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_systemd_accepts_the_shipped_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` of an instance (the venv's voice-fsm for the installed one,
    which it checks is executable): no unknown key, no value systemd would ignore."""
    analyze = find_debian_program("systemd-analyze")
    text = SHIPPED_UNIT.read_text()
    installed = shlex.split(dict(unit_settings(text))["ExecStart"])[0]
    instance = tmp_path / "voice-fsm@8001.service"
    instance.write_text(text.replace(installed, console_script()))
    verified = subprocess.run(
        [analyze, "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == "", verified.stdout + verified.stderr


async def test_sigterm_to_one_of_two_drains_it_while_new_sessions_go_to_the_other(
    tmp_path: Path,
) -> None:
    with two_servers_behind_haproxy(tmp_path) as (first, second, proxy, unit):
        # 40 sessions through HAProxy's one address, 10 handshakes at a time.
        talkers: list[Talker] = []
        for _ in range(SESSIONS // 10):
            talkers += await asyncio.gather(*(open_session(proxy) for _ in range(10)))
        split = await placed((first, second), talkers)
        on_first, on_second = on(first, talkers), on(second, talkers)
        # leastconn: each new session goes to the process with fewer.
        assert min(split) >= SESSIONS // 4, split

        keep_talking = asyncio.Event()
        keep_talking.set()
        talking = {t.session_id: asyncio.create_task(t.talk(keep_talking)) for t in talkers}
        # Every session has finished a turn and is in the middle of the next one.
        async with asyncio.timeout(30):
            while any(t.completed < 1 or not t.in_flight for t in talkers):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        # The turns the draining process is working on: they must complete. (A turn the
        # client starts as the signal lands may instead end in the 1001 close.)
        in_flight = {t.session_id: t.completed + 1 for t in on_first if t.working}
        signalled = time.monotonic()
        first.process.send_signal(unit.kill_signal)  # `systemctl stop` or `restart`
        ready_503 = await readyz_draining(first)
        busy_at_503 = sum(t.close is None and t.in_flight for t in on_first)
        down = asyncio.create_task(marked(proxy, "fsm1", "DOWN"))
        gone = asyncio.create_task(exited(first))

        # New sessions through HAProxy during the drain, and after the process has gone.
        new: list[Talker] = []
        new_talks: list[asyncio.Task[None]] = []
        opened_at: list[float] = []
        while len(new) < NEW_SESSIONS or not gone.done():
            talker = await open_session(proxy)
            opened_at.append(time.monotonic())
            new.append(talker)
            new_talks.append(asyncio.create_task(talker.talk(keep_talking, turns=1)))
            await asyncio.sleep(NEW_EVERY_S)
        down_at, exit_at = await down, await gone
        for _ in range(2):  # with the process gone, its port refuses connections
            new.append(talker := await open_session(proxy))
            opened_at.append(time.monotonic())
            new_talks.append(asyncio.create_task(talker.talk(keep_talking, turns=1)))
        await asyncio.gather(*new_talks)
        await asyncio.gather(*(talking[t.session_id] for t in on_first))
        keep_talking.clear()  # the other process's sessions finish the turn they are in
        await asyncio.gather(*talking.values())

        new_split = await placed((first, second), new)
        stats = proxy.stats()
        [drained] = first.events("server.drained")
        down_reason = [
            line for line in proxy.log_path.read_text().splitlines() if "fsm1 is DOWN" in line
        ]
        everyone = talkers + new
        figures = report(
            "SIGTERM to one of two processes behind HAProxy",
            split=split,
            in_flight_at_sigterm=len(in_flight),
            busy_at_503=busy_at_503,
            readyz_503_after_s=round(ready_503 - signalled, 3),
            haproxy_down_after_s=round(down_at - signalled, 2),
            exit_after_s=round(exit_at - signalled, 2),
            unit_timeout_stop_s=unit.timeout_stop_s,
            new_sessions=len(new),
            new_before_down=sum(t < down_at for t in opened_at),
            new_after_exit=sum(t > exit_at for t in opened_at),
            new_split=new_split,
            refused_handshakes=len(first.events("session.refused", reason="server-draining")),
            haproxy_retries=stats["BACKEND"]["wretr"],
            haproxy_redispatches=stats["BACKEND"]["wredis"],
            haproxy_5xx_to_clients=stats["BACKEND"]["hrsp_5xx"],
            drained=drained["drained"],
            cut=drained["cut"],
            closes=sorted({str(t.close) for t in on_first}),
            turns=sum(t.completed for t in everyone),
            lost=sum(t.lost_turns() for t in everyone),
            down_reason=down_reason[:1],
        )

        # /readyz said draining while the process still had turns in flight.
        assert in_flight, figures
        assert busy_at_503, figures
        # HAProxy's check on /readyz saw the 503 and marked it DOWN before the process left.
        assert down_at < exit_at, figures
        assert any("Layer7 wrong status" in line and "503" in line for line in down_reason), figures
        # Its turns in flight completed, then every one of its sessions was closed with 1001.
        for t in on_first:
            assert t.completed >= in_flight.get(t.session_id, 0), (t.session_id, figures)
            assert t.close == SHUTDOWN, (t.session_id, t.close, figures)
        assert (drained["drained"], drained["cut"]) == (len(on_first), 0), figures
        assert first.process.returncode == 0, figures
        assert exit_at - signalled < unit.timeout_stop_s, figures  # systemd would SIGKILL it
        # Every new session succeeded, on the other process: no 503 reached a client.
        assert on(second, new) == new, figures
        assert all(t.completed == 1 and t.close is None for t in new), figures
        assert stats["BACKEND"]["hrsp_5xx"] == "0", figures
        # The other process's sessions talked on, undisturbed.
        assert all(t.close is None for t in on_second), figures
        # No turn was lost silently, and none failed.
        assert [t.session_id for t in everyone if t.lost_turns()] == [], figures
        assert [e for t in everyone for e in t.errors] == [], figures
        assert_clean_log(first)
        assert_clean_log(second)
        for t in on_second + new:
            await t.ws.close()


async def test_an_idle_process_leaves_before_the_check_sees_it_and_rejoins_when_restarted(
    tmp_path: Path,
) -> None:
    """With no turn in flight the drain is over at once and the process is gone before
    HAProxy's check notices: handshakes sent its way find its port closed and are retried on
    the other process. Started again on the same port, it is back in rotation once the check
    passes `rise` times, and new sessions go to it (it has the fewest)."""
    with two_servers_behind_haproxy(tmp_path) as (first, second, proxy, unit):
        idle = [await open_session(proxy) for _ in range(10)]
        on_first = on(first, idle)
        assert await placed((first, second), idle) == (5, 5)

        signalled = time.monotonic()
        first.process.send_signal(unit.kill_signal)
        exit_at = await exited(first)
        status_at_exit = proxy.status()["fsm1"]
        closes = [await until_closed(t) for t in on_first]
        new = [await open_session(proxy) for _ in range(6)]
        new_split = await placed((first, second), new)
        down_at = await marked(proxy, "fsm1", "DOWN")
        retried = proxy.stats()["BACKEND"]

        with unit_server(tmp_path, "fsm1-again", port=first.port) as (again, _):
            started = time.monotonic()
            up_at = await marked(proxy, "fsm1", "UP")
            after = [await open_session(proxy) for _ in range(4)]
            after_split = await placed((again, second), after)
            figures = report(
                "an idle process stopped and started again behind HAProxy",
                exit_after_s=round(exit_at - signalled, 2),
                haproxy_status_at_exit=status_at_exit,
                haproxy_down_after_s=round(down_at - signalled, 2),
                closes=sorted(set(closes)),
                new_split=new_split,
                haproxy_retries=retried["wretr"],
                haproxy_redispatches=retried["wredis"],
                haproxy_5xx_to_clients=retried["hrsp_5xx"],
                up_after_restart_s=round(up_at - started, 2),
                after_restart_split=after_split,
            )
            assert closes == [SHUTDOWN] * len(on_first), figures
            assert new_split == (0, len(new)), figures
            assert retried["hrsp_5xx"] == "0", figures
            # Back in rotation: it has the fewest sessions, so leastconn sends the new ones there.
            assert after_split == (len(after), 0), figures
            for t in [*idle, *new, *after]:
                await t.ws.close()
            assert_clean_log(again)
        assert first.process.returncode == 0, figures
        assert_clean_log(first)
        assert_clean_log(second)
