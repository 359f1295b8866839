"""Voice-to-voice latency of the embedded offline engines, as a client sees it.

Starts `voice-fsm serve` with no API key (so every stage is local), speaks a question made
with Piper into it turn after turn at the pace of speech (push-to-talk), and reports the time
from the end of the user's audio to the first reply audio byte at the client: p50 and p95,
with the server's per-stage breakdown. Writes the figures as JSON too.

    make bench-local            # or: .venv/bin/python bench/local_latency.py --turns 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

from common import base_env, free_port, machine, percentile, start_server, stop_server

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.talk import TalkResult, talk
from voice_fsm.testing.speech import spoken

QUESTION = "What is the capital of France?"
STAGES = ("stt_ms", "llm_first_token_ms", "llm_ms", "tts_first_audio_ms", "voice_to_voice_ms")


async def run_turns(url: str, pcm: bytes, turns: int) -> list[TalkResult]:
    warm = await talk(url, pcm, realtime=True)  # the first connection and turn, not counted
    if not warm.ok:
        raise SystemExit(f"warm-up turn failed: {warm.error}")
    results = []
    for index in range(turns):
        result = await talk(url, pcm, realtime=True)
        if not result.ok or result.metrics is None:
            raise SystemExit(f"turn {index + 1} failed: {result.error}")
        results.append(result)
        m = result.metrics
        print(
            f"turn {index + 1:2d}: voice-to-voice {result.client_voice_to_voice_ms:4d} ms at the "
            f"client ({m.voice_to_voice_ms} at the server: stt {m.stt_ms}, llm first token "
            f"{m.llm_first_token_ms}, llm {m.llm_ms}, tts first audio {m.tts_first_audio_ms})"
        )
    return results


def report(results: list[TalkResult], audio_s: float) -> dict[str, object]:
    client = [float(r.client_voice_to_voice_ms or 0) for r in results]
    per_stage = {
        name: [float(getattr(r.metrics, name)) for r in results if r.metrics is not None]
        for name in STAGES
    }
    summary: dict[str, object] = {
        "turns": len(results),
        "question_s": round(audio_s, 2),
        "transcript": results[-1].transcript,
        "reply": results[-1].reply,
        "reply_audio_s": round(len(results[-1].audio) / 2 / SAMPLE_RATE, 2),
        "client_voice_to_voice_ms": {
            "p50": percentile(client, 50),
            "p95": percentile(client, 95),
            "mean": round(statistics.fmean(client), 1),
        },
        "server_ms_p50": {name: percentile(v, 50) for name, v in per_stage.items()},
        "server_ms_p95": {name: percentile(v, 95) for name, v in per_stage.items()},
        "machine": machine(),
    }
    print()
    print(f"question: {audio_s:.2f} s of speech ({QUESTION!r}), {len(results)} turns")
    print(f"transcript: {summary['transcript']!r}; reply: {summary['reply']!r}")
    v2v = summary["client_voice_to_voice_ms"]
    assert isinstance(v2v, dict)
    print(f"voice-to-voice at the client: p50 {v2v['p50']:.0f} ms, p95 {v2v['p95']:.0f} ms")
    print("server stages, p50 / p95 ms:")
    for name in STAGES:
        p50, p95 = percentile(per_stage[name], 50), percentile(per_stage[name], 95)
        print(f"  {name:20s} {p50:6.0f} / {p95:6.0f}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the question")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", default="artifacts/bench-local.json")
    args = parser.parse_args()

    pcm = spoken(QUESTION, total_s=args.seconds)
    port = args.port or free_port()
    with tempfile.TemporaryDirectory() as workdir:
        env = base_env(VOICE_FSM_LOG__FORMAT="json")  # no key: every stage is local
        server, _ = start_server(port, Path(workdir), env)
        try:
            results = asyncio.run(run_turns(f"ws://127.0.0.1:{port}/ws", pcm, args.turns))
        finally:
            stop_server(server)
    summary = report(results, len(pcm) / 2 / SAMPLE_RATE)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
