"""Debian's HAProxy in front of the load test's `voice-fsm serve` processes, run with the
shipped deploy/haproxy.cfg changed only where a bench must: the frontend binds a free loopback
port, the `server` lines name the bench's processes, the syslog line goes (HAProxy runs in the
foreground and logs nothing), and the global `maxconn` is lowered to what the open-file limit
allows (two descriptors a connection), since HAProxy refuses to start when it cannot raise the
limit itself. The balancing, checks, retries and timeouts measured are the file's own.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from common import REPO, free_port, stop_server

SHIPPED_CONFIG = REPO / "deploy" / "haproxy.cfg"
FD_MARGIN = 1000
"""Descriptors HAProxy keeps besides two a connection (listeners, checks): a guess."""


def find_haproxy() -> str:
    """Debian's haproxy, in /usr/sbin, which a user's PATH may lack."""
    for path in (shutil.which("haproxy"), "/usr/sbin/haproxy", "/usr/bin/haproxy"):
        if path and Path(path).is_file():
            return path
    raise SystemExit("Debian's haproxy is not installed: apt-get install haproxy")


def _replace_once(
    text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str]
) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"deploy/haproxy.cfg: expected one line matching {pattern!r}: {count}")
    return result


def derived_config(port: int, servers: Sequence[tuple[str, int]]) -> str:
    """The shipped config listening on 127.0.0.1:`port`, balancing over `servers` (name, port)."""
    text = _replace_once(SHIPPED_CONFIG.read_text(), r"^\s*log /dev/log local0\s*\n", "")
    text = _replace_once(text, r"^(\s*)bind :80\s*$", rf"\1bind 127.0.0.1:{port}")
    fits = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - FD_MARGIN) // 2
    text = _replace_once(
        text, r"^(\s*maxconn )(\d+)\s*$", lambda m: f"{m[1]}{min(int(m[2]), fits)}"
    )
    lines = text.splitlines()
    shipped = [i for i, line in enumerate(lines) if re.match(r"\s*server\s", line)]
    if not shipped or shipped != list(range(shipped[0], shipped[-1] + 1)):
        raise SystemExit("deploy/haproxy.cfg: expected one block of `server` lines")
    indent = re.match(r"\s*", lines[shipped[0]])
    pad = indent[0] if indent else ""
    lines[shipped[0] : shipped[-1] + 1] = [f"{pad}server {n} 127.0.0.1:{p}" for n, p in servers]
    return "\n".join(lines) + "\n"


@contextmanager
def running_haproxy(
    workdir: Path, servers: Sequence[tuple[str, int]], *, timeout: float = 20.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """HAProxy in the foreground with the derived config, once it forwards /readyz; yields the
    process and its port, and stops it on leaving."""
    haproxy, port = find_haproxy(), free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(derived_config(port, servers))
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise SystemExit(f"haproxy -c: {checked.stdout}{checked.stderr}")
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen([haproxy, "-f", str(config), "-db"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"haproxy did not start: see {workdir / 'haproxy.log'}")
            try:
                # The server checks the Host header; HAProxy passes the client's through.
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield process, port
    finally:
        stop_server(process)
        log.close()
