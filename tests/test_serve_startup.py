"""`voice-fsm serve` at start-up, as a user runs it: the page's address once it listens, and a
busy port refused at once, before any model loads."""

from __future__ import annotations

import json
import re
import resource
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from support.servers import clean_env, console_script, fake_env, stop_process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
OPEN_LINE = re.compile(r"^open (https?://\S+)(?:  \(listening on (.+)\))?$", re.MULTILINE)


def serve_until_listening(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    timeout: float = 30.0,
    verify: ssl.SSLContext | bool = True,
) -> tuple[str, str, str]:
    """Run `voice-fsm serve ARGS` until it prints its `open` line; stop it; return the URL it
    printed (after checking the page answers there), its stdout and its stderr."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [console_script(), "serve", *args], env=env, cwd=tmp_path, stdout=stdout, stderr=stderr
        )
    try:
        deadline = time.monotonic() + timeout
        while not (match := OPEN_LINE.search(err.read_text())):
            assert process.poll() is None, f"exited {process.returncode}: {err.read_text()}"
            assert time.monotonic() < deadline, f"no open line: {err.read_text()}"
            time.sleep(0.05)
        page = httpx.get(match.group(1), timeout=5, trust_env=False, verify=verify)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
    finally:
        assert stop_process(process) == 0
    return match.group(1), out.read_text(), err.read_text()


def test_json_logs_a_listening_event_with_the_real_port_of_port_0(tmp_path: Path) -> None:
    url, stdout, stderr = serve_until_listening(tmp_path, fake_env(), "--port", "0")
    port = int(url.rsplit(":", 1)[1])
    assert port != 0
    assert url == f"http://127.0.0.1:{port}"
    records = [json.loads(line) for line in stdout.splitlines()]  # stdout stays JSON only
    listening = [record for record in records if record["event"] == "server.listening"]
    assert listening == [
        {
            "event": "server.listening",
            "url": url,
            "addresses": [f"127.0.0.1:{port}"],
            "level": "info",
            "timestamp": listening[0]["timestamp"],
        }
    ]
    events = [record["event"] for record in records]
    assert events.index("server.started") < events.index("server.listening")
    assert (
        next(r for r in records if r["event"] == "server.starting")["url"] == f"ws://{url[7:]}/ws"
    )
    assert f"open {url}\n" in stderr


def test_console_logs_and_a_wildcard_host_shown_as_loopback(tmp_path: Path) -> None:
    env = fake_env(VOICE_FSM_LOG__FORMAT="console")
    url, stdout, stderr = serve_until_listening(
        tmp_path, env, "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"
    )
    port = url.rsplit(":", 1)[1]
    assert url == f"http://127.0.0.1:{port}"  # a browser cannot open http://0.0.0.0
    assert f"open {url}  (listening on 0.0.0.0:{port})\n" in stderr
    line = next(line for line in stdout.splitlines() if "server.listening" in line)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert f"url=http://127.0.0.1:{port}" in plain
    assert f"addresses=['0.0.0.0:{port}']" in plain


def test_with_tls_the_address_is_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    pem = str(tmp_path / "server.pem")
    url, stdout, stderr = serve_until_listening(
        tmp_path,
        fake_env(),
        "--port",
        "0",
        "--ssl-certfile",
        pem,
        "--ssl-keyfile",
        pem,
        verify=context,
    )
    assert url.startswith("https://127.0.0.1:")
    assert f'"url": "{url}"' in stdout
    assert f"open {url}\n" in stderr


def test_a_json_log_sharing_stderr_stays_json(tmp_path: Path) -> None:
    """`serve > log 2>&1`: the open line would be the one line of the log that is not JSON;
    the server.listening event says it there."""
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [console_script(), "serve", "--port", "0"],
            env=fake_env(),
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while '"server.listening"' not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        assert stop_process(process) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    listening = next(r for r in records if r["event"] == "server.listening")
    assert listening["url"].startswith("http://127.0.0.1:")


# ---------------------------------------------------------------- a busy port


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_busy_port_fails_before_the_models_load(tmp_path: Path, busy_port: int) -> None:
    """The embedded engines are not disabled: had the check come after them, their
    engine.loaded lines (seconds each) would be in the output."""
    cpu_before = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(
        [console_script(), "serve", "--port", str(busy_port)],
        env=clean_env(VOICE_FSM_LOG__FORMAT="json"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.perf_counter() - started
    cpu = cpu_of_children() - cpu_before
    print(
        f"serve on a busy port exited {done.returncode} after {took * 1000:.0f} ms "
        f"({cpu * 1000:.0f} ms of CPU; the wall time grows with the machine's load)"
    )
    assert done.returncode == 3
    assert done.stderr == (
        f"voice-fsm: port {busy_port} on 127.0.0.1 is already in use (another voice-fsm "
        "serve?): choose another port with --port 8001, VOICE_FSM_PORT=8001 (environment or "
        ".env) or make run PORT=8001\n"
    )
    assert "engine.loaded" not in done.stdout
    assert done.stdout == ""  # nothing was logged at all: it stopped before the logging set-up


def test_the_port_in_dot_env_names_itself_too(tmp_path: Path, busy_port: int) -> None:
    (tmp_path / ".env").write_text(f"VOICE_FSM_PORT={busy_port}\n")
    done = subprocess.run(
        [console_script(), "serve"], env=clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 3
    assert done.stderr.startswith(f"voice-fsm: port {busy_port} on 127.0.0.1 is already in use")


def test_make_run_port_passes_the_port(tmp_path: Path, busy_port: int) -> None:
    """`make run PORT=N` serves on N, over what .env says (-o install: no install step here)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        [make, "--no-print-directory", "-o", "install", "run", f"PORT={busy_port}"],
        env=clean_env(VOICE_FSM_PORT="1"),  # overridden by PORT
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"voice-fsm: port {busy_port} on 127.0.0.1 is already in use" in done.stderr
    assert f"serve --port {busy_port}" in done.stdout  # the command make ran


def test_make_run_without_port_leaves_it_to_the_settings() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-o", "install", "run"],
        env=clean_env(PORT="9999", HOST="example.com"),  # the environment's are not make's
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [".venv/bin/voice-fsm", "serve"]
