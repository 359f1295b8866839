"""TLS: `voice-fsm serve --ssl-certfile --ssl-keyfile` serves https and wss, and a whole turn
runs over wss:// with a certificate from a throwaway CA (trustme) that only the client trusts.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import websockets

from voice_fsm.audio import bytes_for_ms

from support.servers import clean_env, console_script, free_port, run_talk, stop_process

pytestmark = pytest.mark.integration

TRANSCRIPT = "Is this line encrypted?"
REPLY = "Yes, it is."


@dataclass
class TlsServer:
    port: int
    ca: Path
    log: Path

    @property
    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def url(self, scheme: str, path: str, host: str = "localhost") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def wait_for_https(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            httpx.get(url, verify=context, timeout=1.0, trust_env=False)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    chain = workdir / "cert.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))

    port = free_port()
    served = TlsServer(port, workdir / "ca.pem", workdir / "server.log")
    env = clean_env(
        VOICE_FSM_STT__PROVIDER="fake",
        VOICE_FSM_LLM__PROVIDER="fake",
        VOICE_FSM_TTS__PROVIDER="fake",
        VOICE_FSM_FAKE__TRANSCRIPT=TRANSCRIPT,
        VOICE_FSM_FAKE__REPLY=REPLY,
        VOICE_FSM_FAKE__STT_DELAY="0.01",
        VOICE_FSM_FAKE__LLM_FIRST_TOKEN_DELAY="0.01",
        VOICE_FSM_FAKE__LLM_TOKEN_DELAY="0.001",
        VOICE_FSM_FAKE__TTS_FIRST_AUDIO_DELAY="0.01",
        VOICE_FSM_LOG__FORMAT="json",
    )
    args = [console_script(), "serve", "--port", str(port)]
    args += ["--ssl-certfile", str(chain), "--ssl-keyfile", str(workdir / "key.pem")]
    with served.log.open("wb") as output:
        process = subprocess.Popen(args, env=env, cwd=workdir, stdout=output, stderr=output)
    try:
        try:
            wait_for_https(served.url("https", "/healthz"), served.context, process)
        except (RuntimeError, httpx.TransportError) as err:
            raise RuntimeError(f"{err}\n{served.log.read_text()[-3000:]}") from err
        yield served
    finally:
        code = stop_process(process)
    output_text = served.log.read_text()
    assert code == 0, output_text
    assert "Traceback" not in output_text


def test_https_health_check(server: TlsServer) -> None:
    for host in ("localhost", "127.0.0.1"):
        health = httpx.get(
            server.url("https", "/healthz", host), verify=server.context, trust_env=False
        )
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
    lines = server.log.read_text().splitlines()
    starting = next(json.loads(line) for line in lines if '"server.starting"' in line)
    assert starting["url"] == f"wss://127.0.0.1:{server.port}/ws"
    listening = next(json.loads(line) for line in lines if '"server.listening"' in line)
    assert listening["url"] == f"https://127.0.0.1:{server.port}"
    # stdout and stderr go to one file here: the JSON log gets no plain open line.
    assert not [line for line in lines if line.startswith("open ")]


def test_the_port_speaks_tls_only_and_needs_the_ca(server: TlsServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url("http", "/healthz", "127.0.0.1"), trust_env=False, timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url("https", "/healthz"), trust_env=False, timeout=5)


def test_a_turn_over_wss_with_voice_fsm_talk(server: TlsServer, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    url = server.url("wss", "/ws")
    done = run_talk(tmp_path, url, "--cafile", str(server.ca), "--out", str(out))
    assert done.returncode == 0, (done.stderr, server.log.read_text()[-3000:])
    summary = json.loads(done.stdout)
    assert summary["error"] is None
    assert summary["transcript"] == TRANSCRIPT
    assert summary["reply"] == REPLY
    assert summary["audio_bytes"] > 0
    assert summary["metrics"]["audio_in_ms"] == 500
    with wave.open(str(out), "rb") as wav:
        assert wav.getnframes() * 2 == summary["audio_bytes"]


def test_talk_without_the_ca_refuses_the_certificate(server: TlsServer, tmp_path: Path) -> None:
    done = run_talk(tmp_path, server.url("wss", "/ws"))
    assert done.returncode == 2
    assert "certificate verify failed" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_talk_with_a_ca_on_plain_ws_is_a_usage_error(server: TlsServer, tmp_path: Path) -> None:
    done = run_talk(tmp_path, server.url("ws", "/ws"), "--cafile", str(server.ca))
    assert done.returncode == 2
    assert "wss://" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_events_of_a_turn_over_wss(server: TlsServer) -> None:
    seen: list[Any] = []
    audio_bytes = 0
    async with (
        asyncio.timeout(15),
        websockets.connect(server.url("wss", "/ws"), ssl=server.context, proxy=None) as ws,
    ):
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio.start"}))
        for _ in range(10):
            await ws.send(b"\x10\x00" * (bytes_for_ms(40) // 2))
        await ws.send(json.dumps({"type": "input_audio.stop"}))
        while not seen or seen[-1] == "audio" or seen[-1]["type"] != "turn.metrics":
            message = await ws.recv()
            if isinstance(message, bytes):
                audio_bytes += len(message)
                seen.append("audio")
            else:
                seen.append(json.loads(message))
    kinds = [item if item == "audio" else item["type"] for item in seen]
    last = {item["type"]: item for item in seen if item != "audio"}
    transcript, done = last["transcript.done"], last["response.done"]
    assert transcript["text"] == TRANSCRIPT
    assert done["text"] == REPLY
    assert kinds.index("transcript.done") < kinds.index("audio") < kinds.index("response.done")
    assert "error" not in kinds
    assert audio_bytes > 0
