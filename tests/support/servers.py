"""Running real servers in tests: free ports, subprocesses that are ready, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

SCRIPTS = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS may hand it out again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], object], seconds: float = 2.0) -> None:
    """Poll `check` until it is true: for what a fake server records from its own thread,
    where there is no event to wait on."""
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def eventually_sync(check: Callable[[], object], seconds: float = 2.0) -> None:
    """`eventually` for tests without an event loop (the browser tests)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {seconds:g} s: {check}")
        time.sleep(0.01)


def console_script(name: str = "voice-fsm") -> str:
    """The path of an installed console script of this venv."""
    path = SCRIPTS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `pip install -e .`")
    return str(path)


def clean_env(**extra: str) -> dict[str, str]:
    """HOME and PATH only, plus `extra`: nothing else of the caller's environment leaks in.

    PYTHONPATH too, when set: it says which source tree is under test (an editable install
    may point the venv's scripts at another checkout)."""
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", "/usr/bin")}
    if os.environ.get("PYTHONPATH"):
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


def write_question(path: Path, seconds: float = 0.5) -> None:
    """A 300 Hz tone at 16 kHz: the fake speech-to-text transcribes anything to its transcript."""
    t = np.arange(round(seconds * 16_000)) / 16_000
    samples = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(samples.tobytes())


def run_talk(
    workdir: Path, url: str, *extra: str, seconds: float = 0.5
) -> subprocess.CompletedProcess[str]:
    """`voice-fsm talk --json` with a question of `seconds`, as a user would run it."""
    question = workdir / "question.wav"
    write_question(question, seconds)
    return subprocess.run(
        [console_script(), "talk", "--wav", str(question), "--url", url, "--json", *extra],
        env=clean_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


QUICK_FAKES = {
    "VOICE_FSM_FAKE__STT_DELAY": "0.01",
    "VOICE_FSM_FAKE__LLM_FIRST_TOKEN_DELAY": "0.01",
    "VOICE_FSM_FAKE__LLM_TOKEN_DELAY": "0.001",
    "VOICE_FSM_FAKE__TTS_FIRST_AUDIO_DELAY": "0.01",
}
"""Fake providers that answer within a few milliseconds."""


def fake_env(**settings: str) -> dict[str, str]:
    """`clean_env` for `voice-fsm serve` on the fake providers with JSON logs; `settings`
    (full VOICE_FSM_ names) add to that or override it."""
    env = {f"VOICE_FSM_{stage}__PROVIDER": "fake" for stage in ("STT", "LLM", "TTS")}
    env["VOICE_FSM_LOG__FORMAT"] = "json"
    env.update(settings)
    return clean_env(**env)


def skip_or_fail(reason: str) -> None:
    """Skip the calling test; under CI=true (where .ci/run installs what the tests need),
    fail it instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: every test must run)")
    pytest.skip(reason)


def find_debian_program(name: str) -> str:
    """The path of a program from Debian's package `name` (in /usr/bin, or /usr/sbin which a
    user's PATH may lack), or skip (fail under CI=true) when it is not installed."""
    candidates = (f"/usr/bin/{name}", f"/usr/sbin/{name}")
    path = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if path is None:
        skip_or_fail(f"Debian's {name} is not installed: apt-get install {name}")
    assert path is not None
    return path
