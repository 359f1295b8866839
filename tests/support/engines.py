"""`voice-fsm engines` in tests: the environment that loads the small language model quickly,
a running engines process that is ready, and `serve` processes pointed at it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.servers import clean_env, console_script, free_port, running_server

QUICK_ENGINES = {
    # SmolLM2-135M loads and answers in a second or two where Qwen2.5-0.5B takes several.
    "VOICE_FSM_LOCAL__LLM_MODEL": "smollm2-135m",
    # No built-in tools: the warm-up then evaluates one system prompt, not two.
    "VOICE_FSM_TOOLS__BUILTINS": "off",
    "VOICE_FSM_LOG__FORMAT": "json",
}
"""Settings shared by the engines and the servers that use them (as one .env would be)."""


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> list[int]:
    """Poll `url`/readyz until 200; the statuses seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != 200:
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout:g} s: {seen[-5:]}")
        seen.append(httpx.get(f"{url}/readyz", timeout=2).status_code)
        if seen[-1] != 200:
            time.sleep(0.1)
    return seen


@contextmanager
def running_engines(workdir: Path, **settings: str) -> Iterator[tuple[Running, list[int]]]:
    """`voice-fsm engines` on a free port, once its models are loaded; with the /readyz
    statuses seen while it loaded. `settings` are full VOICE_FSM_ names."""
    port = free_port()
    log = workdir / "engines.log"
    env = clean_env(**{**QUICK_ENGINES, **settings})
    with running_server(
        [console_script(), "engines", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=log,
        timeout=60,
    ) as process:
        engines = Running(process, port, log)
        yield engines, wait_until_ready(engines.url, process)


def serve_env(engines_url: str, **settings: str) -> dict[str, str]:
    """`voice-fsm serve` with every stage on the engines at `engines_url`: provider openai and
    the base URL, nothing else (the models' names come from the shared settings)."""
    env = {**QUICK_ENGINES}
    for stage in ("STT", "LLM", "TTS"):
        env[f"VOICE_FSM_{stage}__PROVIDER"] = "openai"
        env[f"VOICE_FSM_{stage}__BASE_URL"] = f"{engines_url}/v1"
    env.update(settings)
    return clean_env(**env)


@contextmanager
def running_serve(workdir: Path, engines_url: str, name: str) -> Iterator[Running]:
    port = free_port()
    log = workdir / f"{name}.log"
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=serve_env(engines_url),
        cwd=workdir,
        log=log,
        timeout=60,
    ) as process:
        yield Running(process, port, log)


def samples(exposition: str, name: str, **labels: str) -> dict[str, float]:
    """The values of metric sample `name` with `labels` in a Prometheus exposition, by engine
    label (parsed by prometheus-client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.labels.get("engine", ""): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    }
