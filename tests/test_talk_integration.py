"""End to end: `voice-fsm talk` -> the real server (`voice-fsm serve`) -> a fake OpenAI API.

The fake runs in this process (so its record of requests can be checked); the server and the
client run as the console scripts a user would type, with a clean environment and no .env.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice_fsm.testing import FakeOpenAIConfig, running_fake_openai, speech_pcm

from support.servers import clean_env, console_script, free_port, run_talk, running_server

pytestmark = pytest.mark.integration

KEY = "sk-test-integration-4242"
TRANSCRIPT = "How far away is the Moon?"
REPLY = "About 384,000 kilometres. Light takes just over a second to get there."


@dataclass
class Stack:
    fake: FakeOpenAIConfig
    url: str
    log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("server")
    fake = FakeOpenAIConfig(
        api_key=KEY,
        transcript=TRANSCRIPT,
        reply=REPLY,
        stt_delay=0.02,
        llm_first_token_delay=0.02,
        llm_token_delay=0.005,
        tts_first_audio_delay=0.02,
        tts_chunk_delay=0.005,
    )
    with running_fake_openai(fake) as base_url:
        port = free_port()
        log = workdir / "server.log"
        with running_server(
            [console_script(), "serve", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            # Completed recordings only: the first live try at a base URL would be a request
            # of its own (tests/test_live_auto.py), and this test counts the HTTP ones.
            env=clean_env(
                OPENAI_API_KEY=KEY,
                OPENAI_BASE_URL=base_url,
                VOICE_FSM_LOG__FORMAT="json",
                VOICE_FSM_STT__LIVE="false",
            ),
            cwd=workdir,
            log=log,
        ) as server:
            yield Stack(fake=fake, url=f"ws://127.0.0.1:{port}/ws", log=log)
        # Stopped by SIGINT on leaving the block: it must have shut down by itself, cleanly.
        assert server.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()


def test_one_turn_through_the_real_server(stack: Stack, tmp_path: Path) -> None:
    stack.fake.requests.clear()
    out = tmp_path / "reply.wav"
    done = run_talk(tmp_path, stack.url, "--out", str(out), seconds=1.5)
    assert done.returncode == 0, (done.stderr, stack.log.read_text()[-3000:])
    summary = json.loads(done.stdout)
    assert summary["error"] is None
    assert summary["transcript"] == TRANSCRIPT
    assert summary["reply"] == REPLY

    metrics = summary["metrics"]
    assert metrics is not None
    assert metrics["voice_to_voice_ms"] > 0
    assert metrics["audio_in_ms"] == 1500
    for name in ("stt_ms", "llm_first_token_ms", "llm_ms", "tts_first_audio_ms", "tts_ms"):
        assert isinstance(metrics[name], int), name

    # What the fake was asked.
    (transcription,) = stack.fake.received("transcriptions")
    assert transcription.file is not None
    assert (transcription.file.name, transcription.file.content_type) == ("turn.wav", "audio/wav")
    assert transcription.fields["stream"] == "true"
    (chat,) = stack.fake.received("chat")
    assert chat.json is not None
    assert chat.json["stream"] is True
    assert chat.json["messages"][-1] == {"role": "user", "content": TRANSCRIPT}
    speeches = stack.fake.received("speech")
    assert speeches
    inputs = [request.json["input"] for request in speeches if request.json is not None]
    assert [request.json and request.json["response_format"] for request in speeches] == [
        "pcm"
    ] * len(speeches)
    assert " ".join(text.strip() for text in inputs) == REPLY

    # The reply audio is exactly what the fake spoke, as a 24 kHz mono WAV.
    spoken = b"".join(speech_pcm(text) for text in inputs)
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.readframes(wav.getnframes()) == spoken
    assert summary["audio_bytes"] == len(spoken)

    # The turn's log line names each provider request by the id the provider gave it.
    (line,) = [
        record
        for record in map(json.loads, stack.log.read_text().splitlines())
        if record.get("event") == "turn.completed"
        and record.get("session_id") == summary["session_id"]
    ]
    assert line["outcome"] == "ok"
    assert line["provider_requests"] == [
        {"stage": "stt", "id": transcription.request_id},
        {"stage": "llm", "id": chat.request_id},
        *({"stage": "tts", "id": request.request_id} for request in speeches),
    ]


def test_a_rejected_key_is_an_error_event(stack: Stack, tmp_path: Path) -> None:
    stack.fake.requests.clear()
    stack.fake.api_key = "sk-some-other-key-9999"
    try:
        done = run_talk(tmp_path, stack.url, seconds=1.5)
    finally:
        stack.fake.api_key = KEY
    assert done.returncode == 1, (done.stderr, stack.log.read_text()[-3000:])
    assert done.stderr.startswith("error provider-auth (stt): ")
    assert KEY not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["error"]["code"] == "provider-auth"
    assert summary["error"]["retryable"] is False
    assert summary["metrics"] is None
    assert len(stack.fake.received("transcriptions")) == 1  # a 401 is not retried
