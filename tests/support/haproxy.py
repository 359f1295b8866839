"""Debian's HAProxy in front of `voice-fsm serve` processes, with the shipped deploy/haproxy.cfg.

The config HAProxy runs here is derived from the shipped file by the few substitutions a test
needs, so the balancing, checks, retries and timeouts under test are the file's own:

- the syslog `log` line logs to stdout instead (HAProxy runs in the foreground, `-db`), so the
  access log lands in a file next to the servers' logs;
- a stats socket (a unix socket in the test's directory) is added, to read each server's state
  (UP, DOWN) and the retry counters;
- the global `maxconn` is lowered to what the open-file limit allows, when it is lower: HAProxy
  needs two descriptors per connection and refuses to start ("Cannot raise FD limit") when it
  cannot raise the limit itself, as root in a container without CAP_SYS_RESOURCE cannot;
- the frontend binds a free loopback port, and the `server` lines name the test's processes.

Each substitution must match exactly once: when the shipped file changes shape, this fails
instead of quietly testing something else.

The processes behind it are started as deploy/voice-fsm@.service starts them (`shipped_unit`):
its command line (the venv's `voice-fsm` for /opt/voice-fsm's), its Environment= lines, the
signal that stops it and the time systemd gives the stop before it kills.
"""

from __future__ import annotations

import csv
import io
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.servers import console_script, free_port, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "deploy" / "haproxy.cfg"
SHIPPED_UNIT = REPO / "deploy" / "voice-fsm@.service"
BACKEND = "voice_fsm"
FD_MARGIN = 1000
"""Descriptors HAProxy keeps besides two per connection (listeners, checks, logs): a guess."""


def find_haproxy() -> str:
    """Debian's haproxy (installed in /usr/sbin, which a user's PATH may lack), or skip (fail
    under CI=true)."""
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/bin/haproxy") if os.access(p, os.X_OK)), None
    )
    if path is None:
        skip_or_fail("Debian's haproxy is not installed: apt-get install haproxy")
    assert path is not None
    return path


def check_config(haproxy: str, config: Path) -> subprocess.CompletedProcess[str]:
    """`haproxy -c -f config`: HAProxy's own validation of a file."""
    return subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(
            f"deploy/haproxy.cfg: expected one line matching {pattern!r}, found {count}"
        )
    return result


def derived_config(port: int, servers: Sequence[tuple[str, int]], stats_socket: Path) -> str:
    """The shipped config, listening on `port`, balancing over `servers` (name, port), with
    logs to stdout and a stats socket."""
    text = SHIPPED_CONFIG.read_text()
    text = _replace_once(
        text,
        r"^(\s*)log /dev/log local0\s*$",
        rf"\1log stdout format raw local0\n\1stats socket {stats_socket} mode 600 level admin",
    )
    text = _replace_once(text, r"^(\s*)bind :80\s*$", rf"\1bind 127.0.0.1:{port}")
    fits = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - FD_MARGIN) // 2
    text = re.sub(
        r"^(\s*maxconn )(\d+)\s*$",
        lambda m: f"{m[1]}{min(int(m[2]), fits)}",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    lines = text.splitlines()
    shipped = [i for i, line in enumerate(lines) if re.match(r"\s*server\s", line)]
    if not shipped or shipped != list(range(shipped[0], shipped[-1] + 1)):
        raise AssertionError("deploy/haproxy.cfg: expected one block of `server` lines")
    indent = lines[shipped[0]][: len(lines[shipped[0]]) - len(lines[shipped[0]].lstrip())]
    ours = [f"{indent}server {name} 127.0.0.1:{server_port}" for name, server_port in servers]
    lines[shipped[0] : shipped[-1] + 1] = ours
    return "\n".join(lines) + "\n"


@dataclass
class HAProxy:
    process: subprocess.Popen[bytes]
    port: int
    config: Path
    stats_socket: Path
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self, line: str) -> str:
        """One command on the stats socket (`show stat`, `show servers state`), its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend: a row per server, and one named BACKEND."""
        text = self.command("show stat").removeprefix("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == BACKEND
        }

    def status(self) -> dict[str, str]:
        """Each server's check status: UP, DOWN, or a transition (`UP 1/2`, `DOWN 1/2`)."""
        return {name: row["status"] for name, row in self.stats().items() if name != "BACKEND"}

    def wait_for_status(self, wanted: dict[str, str], seconds: float = 15.0) -> float:
        """Wait until the servers named in `wanted` have that status; how long it took."""
        started = time.monotonic()
        while (status := self.status()) and any(status[k] != v for k, v in wanted.items()):
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() - started > seconds:
                raise TimeoutError(f"HAProxy's servers are {status}, not {wanted}\n{self.log()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def running_haproxy(
    workdir: Path, servers: Sequence[tuple[str, int]], *, timeout: float = 15.0
) -> Iterator[HAProxy]:
    """HAProxy in the foreground with the derived config, once every server is UP; stopped
    (SIGTERM, its immediate stop) on leaving."""
    haproxy = find_haproxy()
    port = free_port()
    stats_socket = workdir / "haproxy.sock"
    config = workdir / "haproxy.cfg"
    config.write_text(derived_config(port, servers, stats_socket))
    checked = check_config(haproxy, config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [haproxy, "-f", str(config), "-db"], stdout=output, stderr=subprocess.STDOUT
        )
    proxy = HAProxy(process, port, config, stats_socket, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not stats_socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{proxy.log()}")
            time.sleep(0.02)
        proxy.wait_for_status({name: "UP" for name, _ in servers}, timeout)
        yield proxy
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# ---------------------------------------------------------------- the processes behind it


@dataclass(frozen=True)
class Unit:
    """What deploy/voice-fsm@.service runs for one port, and how systemd stops it."""

    command: list[str]
    environment: dict[str, str]
    kill_signal: signal.Signals
    timeout_stop_s: float


def unit_settings(text: str) -> list[tuple[str, str]]:
    """The unit file's `Key=value` lines, in order (keys may repeat)."""
    return [
        (key.strip(), value.strip())
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith(("#", ";"))
        for key, value in [line.split("=", 1)]
    ]


def shipped_unit(port: int, cache_dir: Path) -> Unit:
    """The shipped unit's instance for `port` (`%i`), with `%C` (systemd's cache root) at
    `cache_dir` and the venv's console script for the installed one."""
    settings = unit_settings(SHIPPED_UNIT.read_text())

    def expand(value: str) -> str:
        return value.replace("%i", str(port)).replace("%C", str(cache_dir))

    environment: dict[str, str] = {}
    for key, value in settings:
        if key == "Environment":
            for assignment in shlex.split(expand(value)):
                name, _, setting = assignment.partition("=")
                environment[name] = setting
    found = dict(settings)
    program, *arguments = shlex.split(expand(found["ExecStart"]))
    assert Path(program).name == "voice-fsm", program
    timeout = found["TimeoutStopSec"]
    match = re.fullmatch(r"(\d+)s", timeout)  # the form the shipped file uses
    assert match is not None, timeout
    return Unit(
        command=[console_script(), *arguments],
        environment=environment,
        kill_signal=signal.Signals[found["KillSignal"]],
        timeout_stop_s=float(match[1]),
    )
