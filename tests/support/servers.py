"""Running real servers in tests: free ports, subprocesses that are ready, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

SCRIPTS = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS may hand it out again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def console_script(name: str = "voice-fsm") -> str:
    """The path of an installed console script of this venv."""
    path = SCRIPTS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `pip install -e .`")
    return str(path)


def clean_env(**extra: str) -> dict[str, str]:
    """HOME and PATH only, plus `extra`: nothing else of the caller's environment leaks in.

    PYTHONPATH is kept, so a server started by the tests runs the tests' code (a worktree's
    ``src`` with a shared venv) rather than the code the venv was installed from.
    """
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", "/usr/bin")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def wait_for_http(
    url: str, *, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> httpx.Response:
    """Poll `url` until it answers HTTP at all; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before answering")
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Ask the process to stop (SIGINT, like Ctrl-C), then kill it if it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


@contextmanager
def running_server(
    args: Sequence[str],
    *,
    ready_url: str,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    timeout: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `args`, wait until `ready_url` answers, yield the process, stop it on exit.

    Its stdout and stderr go to `log`, which is quoted when it fails to start.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(args), env=dict(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_for_http(ready_url, process=process, timeout=timeout)
        except (RuntimeError, TimeoutError) as err:
            stop_process(process)
            output_text = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{err}\n--- server output ---\n{output_text}") from err
        yield process
    finally:
        stop_process(process)
