"""What the benchmarks share: ports, percentiles (failed turns counted in), a `voice-fsm serve`
they start and stop, its counters, the load of the machine, and a git worktree of another
commit for such a server to run."""

from __future__ import annotations

import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TURN_TIMEOUT_S = 30.0
"""How long a bench waits for a turn's reply; a failed or timed-out turn counts as this long."""
TIMEOUT_MS = TURN_TIMEOUT_S * 1000
QUANTILES = (50, 95, 99)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float], failed: int = 0) -> dict[str, float]:
    """p50, p95, p99, max and mean of `values` and of `failed` turns counted as the timeout
    (`TIMEOUT_MS`), with the count of those failures as "errors"."""
    counted = [*values, *[TIMEOUT_MS] * failed]
    out: dict[str, float] = {"errors": failed}
    if not counted:
        return out
    out.update({f"p{q}": round(percentile(counted, q), 1) for q in QUANTILES})
    out["max"] = round(max(counted), 1)
    out["mean"] = round(statistics.fmean(counted), 1)
    return out


def load_average() -> list[float]:
    """/proc/loadavg's 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def scrape_counters(port: int, pattern: str = "speculat|wasted") -> dict[str, float]:
    """The server's /metrics samples whose name matches `pattern`, summed over their labels;
    empty when there are none (or no /metrics)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if line.startswith("#") or not re.search(pattern, name) or name.endswith("_created"):
            continue
        try:
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
    return found


def base_env(**extra: str) -> dict[str, str]:
    """HOME and PATH only, plus `extra`: none of the caller's settings or keys leak in.

    PYTHONPATH is kept, so the server runs the bench's code (a worktree's ``src`` with a
    shared venv) rather than the code the venv was installed from.
    """
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", "")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def start_server(
    port: int, workdir: Path, env: Mapping[str, str], *, timeout: float = 120
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start `voice-fsm serve` in `workdir` (so no .env of the developer's is read), its output
    in workdir/server.log; return it with its /healthz answer once it answers."""
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "voice-fsm"), "serve", "--port", str(port)],
        cwd=workdir,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: see {workdir / 'server.log'}")
        try:
            health: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            print(f"server: stt {health['stt']}, llm {health['llm']}, tts {health['tts']}")
            return server, health
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not answer within {timeout:g} s")


def stop_server(server: subprocess.Popen[bytes], wait_s: float = 10) -> None:
    """SIGTERM, `wait_s` for it to exit, then SIGKILL."""
    server.terminate()
    try:
        server.wait(wait_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def cpu_seconds(pid: int | None) -> float | None:
    """User and system CPU time that process `pid` has used so far (Linux), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def current_tree() -> str:
    """This checkout as a bench names it: its commit, and whether files differ from it."""
    commit = _git("rev-parse", "--short=10", "HEAD")
    changed = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return f"HEAD ({commit}){' with uncommitted changes' if changed else ''}"


@contextmanager
def git_worktree(rev: str) -> Iterator[tuple[Path, str]]:
    """`rev` checked out in a temporary git worktree (detached): its folder and full commit
    id. The worktree is removed on exit; this checkout and its index are not touched."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="bench-worktree-") as parent:
        checkout = Path(parent) / commit[:10]
        _git("worktree", "add", "--detach", "--quiet", str(checkout), commit)
        try:
            yield checkout, commit
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(checkout)],
                cwd=REPO,
                capture_output=True,
                check=False,
            )
            subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True, check=False)


def voice_fsm_source(env: Mapping[str, str]) -> Path:
    """The folder `voice_fsm` is imported from by this venv's Python with `env` (PYTHONPATH
    comes before the editable install): the code a server started with `env` runs."""
    done = subprocess.run(
        [sys.executable, "-c", "import voice_fsm; print(voice_fsm.__file__)"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip()).resolve().parents[1]
