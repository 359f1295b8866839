"""Voice-to-voice latency of the cascade and of speech-to-speech mode, on the same fakes.

One `voice-fsm serve` runs both pipelines: the cascade against the fake OpenAI API (live
transcription and speech through the fake Realtime API, the HTTP chat model) with the original
design's `LatencyProfile`, and speech-to-speech mode against the fake Realtime conversation
server, whose model starts speaking `first_audio_s` after ``response.create`` and sends audio
at the profile's speech rate (`ConversationLatency`). Both are asked the same question, at the
pace of speech, alternately, by one protocol v1 client per pipeline (one session each, as a
user keeps one). Voice-to-voice is the time from ``input_audio.stop`` to the first reply audio
frame at the client; the server's own figure (turn.metrics) is reported beside it.

    make bench ARGS="--speech-to-speech"
    make bench ARGS="--speech-to-speech --turns 20 --profile llm_tokens_per_s=50"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import websockets
from common import base_env, free_port, percentile, start_server, stop_server

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.testing.fake_openai import create_fake_openai_app
from voice_fsm.testing.fake_realtime import realtime_routes
from voice_fsm.testing.fake_realtime_conversation import (
    ConversationLatency,
    FakeConversationConfig,
    create_fake_conversation_app,
)
from voice_fsm.testing.latency_profile import (
    REPLY,
    SPEECH_CHUNK_BYTES,
    TRANSCRIPT,
    LatencyProfile,
    critical_path_s,
    fake_openai_config,
    fake_realtime_config,
)
from voice_fsm.testing.speech import voiced
from voice_fsm.testing.threaded_server import serving_in_thread

KEY = "sk-bench-s2s-0000"
FRAME_BYTES = 4800  # 100 ms of PCM16 at 24 kHz
PIPELINES = ("cascade", "speech-to-speech")


def conversation_latency(profile: LatencyProfile, first_audio_s: float) -> ConversationLatency:
    """The speech-to-speech model's latency: its own first audio, the profile's speech rate."""
    return ConversationLatency(
        first_audio_s=first_audio_s,
        realtime_factor=profile.tts_realtime_factor,
        chunk_bytes=SPEECH_CHUNK_BYTES,
    )


def _serve_fakes(profile: LatencyProfile, first_audio_s: float, conn: Connection) -> None:
    """The fakes' process: the cascade's OpenAI API and the conversation server, until told."""
    cascade = create_fake_openai_app(fake_openai_config(profile))
    cascade.router.routes[0:0] = realtime_routes(fake_realtime_config(profile))
    conversation = FakeConversationConfig(
        transcript=TRANSCRIPT,
        reply=REPLY,
        session_delay=profile.realtime_connect_s,
        transcription_delay=profile.live_final_s,
        latency=conversation_latency(profile, first_audio_s),
    )
    s2s = create_fake_conversation_app(conversation)
    with (
        serving_in_thread(cascade, "fakes") as cascade_url,
        serving_in_thread(s2s, "fake-s2s") as s2s_url,
    ):
        conn.send({"cascade": cascade_url, "s2s": s2s_url})
        with contextlib.suppress(EOFError):
            conn.recv()


@dataclass
class Turns:
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def one_turn(ws: Any, pcm: bytes, turns: Turns) -> None:
    """Speak `pcm` at the pace of speech; time the first reply audio; wait for the metrics."""
    await ws.send(json.dumps({"type": "input_audio.start"}))
    for at in range(0, len(pcm), FRAME_BYTES):
        await ws.send(pcm[at : at + FRAME_BYTES])
        await asyncio.sleep(FRAME_BYTES / 2 / SAMPLE_RATE)
    await ws.send(json.dumps({"type": "input_audio.stop"}))
    stopped, first = time.perf_counter(), None
    async with asyncio.timeout(30):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                first = first or time.perf_counter()
                continue
            event = json.loads(message)
            if event["type"] == "error":
                turns.errors.append(f"{event['code']}: {event['message']}")
                return
            if event["type"] == "turn.metrics":
                break
    if first is None:
        turns.errors.append("no reply audio")
        return
    turns.client_ms.append((first - stopped) * 1000)
    if event["voice_to_voice_ms"] is not None:
        turns.server_ms.append(event["voice_to_voice_ms"])


async def run(url: str, pcm: bytes, count: int) -> dict[str, Turns]:
    results = {pipeline: Turns() for pipeline in PIPELINES}
    async with contextlib.AsyncExitStack() as stack:
        sockets = {}
        for pipeline in PIPELINES:
            ws = await stack.enter_async_context(websockets.connect(url, max_size=None))
            created = json.loads(await ws.recv())
            assert pipeline in created["pipelines"], created["pipelines"]
            await ws.send(json.dumps({"type": "session.update", "session": {"pipeline": pipeline}}))
            while json.loads(await ws.recv())["type"] != "session.updated":
                pass
            sockets[pipeline] = ws
        for _ in range(count):
            for pipeline in PIPELINES:  # alternately: both see the same moments of the machine
                await one_turn(sockets[pipeline], pcm, results[pipeline])
                await asyncio.sleep(0.3)
    return results


def figures(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(percentile(values, 50)), "p99": round(percentile(values, 99))}


def compare_pipelines(
    profile: LatencyProfile, *, turns: int, seconds: float, first_audio_s: float, out_dir: str
) -> dict[str, Any]:
    """Run the comparison; print and return its summary (also written as JSON)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    fakes = context.Process(target=_serve_fakes, args=(profile, first_audio_s, theirs), daemon=True)
    fakes.start()
    if not ours.poll(60):
        fakes.kill()
        raise SystemExit("the fake providers did not start")
    urls = ours.recv()
    pcm = voiced(seconds)
    port = free_port()
    env = base_env(
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=urls["cascade"],
        VOICE_FSM_STT__PROVIDER="openai",
        VOICE_FSM_STT__LIVE="true",
        VOICE_FSM_LLM__PROVIDER="openai",
        VOICE_FSM_TTS__PROVIDER="openai-realtime",
        VOICE_FSM_S2S__PROVIDER="openai-realtime",
        VOICE_FSM_S2S__BASE_URL=urls["s2s"],
        VOICE_FSM_VAD__PROVIDER="off",
        VOICE_FSM_LOG__FORMAT="json",
    )
    try:
        with tempfile.TemporaryDirectory() as workdir:
            server, _ = start_server(port, Path(workdir), env)
            try:
                results = asyncio.run(run(f"ws://127.0.0.1:{port}/ws", pcm, turns))
            finally:
                stop_server(server)
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        fakes.join(10)
        if fakes.is_alive():
            fakes.kill()
    audio_s = len(pcm) / 2 / SAMPLE_RATE
    expected = {
        "cascade": critical_path_s(profile, audio_s, REPLY, live=True) * 1000,
        "speech-to-speech": first_audio_s * 1000,
    }
    summary: dict[str, Any] = {"turns": turns, "question_s": round(audio_s, 2), "pipelines": {}}
    print(f"\nvoice to voice, {turns} turns each, a {audio_s:.1f} s question (ms):")
    head = ("pipeline", "client p50", "p99", "server p50", "p99", "providers")
    print("{:<18}{:>11}{:>7}{:>12}{:>7}{:>11}".format(*head))
    for pipeline, result in results.items():
        client, server_side = figures(result.client_ms), figures(result.server_ms)
        row = {
            "client": client,
            "server": server_side,
            "providers_ms": round(expected[pipeline]),
            "errors": result.errors,
        }
        summary["pipelines"][pipeline] = row
        print(
            f"{pipeline:<18}{client['p50']!s:>11}{client['p99']!s:>7}"
            f"{server_side['p50']!s:>12}{server_side['p99']!s:>7}{row['providers_ms']:>11}"
            + (f"  errors: {result.errors[:3]}" if result.errors else "")
        )
    print("providers: the fakes' own part of the path (the cascade's critical path; the model's")
    print("first audio after response.create); the rest is the server's and the network's.")
    path = Path(out_dir) / "bench-s2s.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return summary
