"""Voice-to-voice latency of the embedded offline engines, as a client sees it.

Starts `voice-fsm serve` with no API key (so every stage is local), speaks short questions
made with Piper into it turn after turn at the pace of speech (push-to-talk), each padded with
silence to `--seconds`, and reports the time from the end of the user's audio to the first
reply audio byte at the client: p50 and p95, with the server's per-stage breakdown. Writes the
figures as JSON too.

The questions take turns: asked again and again, one question would find its whole prompt in
the language model's cache and its first token would come in a fraction of the time a new
question's does (Qwen2.5-0.5B here: about 50 ms against 300 ms).

`--llm-model` (repeatable) runs one server per language model and prints their figures side by
side. `--sessions 1,2,4,8` then measures capacity: N users talking to one process at once, each
asking, listening to the whole reply (its audio's duration) and asking again; the embedded
engines run one inference at a time each, so turns queue. Voice-to-voice p50/p95 per N shows
where it stops being conversational.

    make bench-local            # or: .venv/bin/python bench/local_latency.py --turns 20
    make bench-local ARGS="--llm-model smollm2-135m --llm-model qwen2.5-coder-0.5b"
    make bench-local ARGS="--sessions 1,2,4,8"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import base_env, free_port, machine, percentile, start_server, stop_server

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.talk import TalkError, TalkResult, talk
from voice_fsm.testing.speech import spoken

QUESTIONS = (
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "What is the largest ocean?",
    "How many days are in a week?",
    "What color is the sky?",
    "What is the red planet?",
)
WARM_UP = "What is the opposite of hot?"
STAGES = ("stt_ms", "llm_first_token_ms", "llm_ms", "tts_first_audio_ms", "voice_to_voice_ms")


def questions(seconds: float) -> list[bytes]:
    """Each of QUESTIONS spoken by Piper and padded with silence to `seconds`."""
    pcms = [spoken(question, total_s=seconds) for question in QUESTIONS]
    longest = max(len(pcm) for pcm in pcms) / 2 / SAMPLE_RATE
    if longest > seconds + 0.01:
        raise SystemExit(f"--seconds {seconds}: a question takes {longest:.2f} s")
    return pcms


async def run_turns(url: str, pcms: Sequence[bytes], turns: int) -> list[TalkResult]:
    warm_up = spoken(WARM_UP, total_s=len(pcms[0]) / 2 / SAMPLE_RATE)
    warm = await talk(url, warm_up, realtime=True)  # the first connection and turn, not counted
    if not warm.ok:
        raise SystemExit(f"warm-up turn failed: {warm.error}")
    results = []
    for index in range(turns):
        result = await talk(url, pcms[index % len(pcms)], realtime=True)
        if not result.ok or result.metrics is None:
            raise SystemExit(f"turn {index + 1} failed: {result.error}")
        results.append(result)
        m = result.metrics
        print(
            f"turn {index + 1:2d}: voice-to-voice {result.client_voice_to_voice_ms:4d} ms at the "
            f"client ({m.voice_to_voice_ms} at the server: stt {m.stt_ms}, llm first token "
            f"{m.llm_first_token_ms}, llm {m.llm_ms}, tts first audio {m.tts_first_audio_ms}): "
            f"{result.transcript!r} -> {result.reply!r}"
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
        "exchanges": [[r.transcript, r.reply] for r in results],
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
    print(f"{len(QUESTIONS)} questions in turn, each {audio_s:.2f} s long, {len(results)} turns")
    v2v = summary["client_voice_to_voice_ms"]
    assert isinstance(v2v, dict)
    print(f"voice-to-voice at the client: p50 {v2v['p50']:.0f} ms, p95 {v2v['p95']:.0f} ms")
    print("server stages, p50 / p95 ms:")
    for name in STAGES:
        p50, p95 = percentile(per_stage[name], 50), percentile(per_stage[name], 95)
        print(f"  {name:20s} {p50:6.0f} / {p95:6.0f}")
    return summary


# ---------------------------------------------------------------- capacity


async def user(
    url: str, pcms: Sequence[bytes], turns: int, start_after: float, first: int
) -> list[TalkResult | str]:
    """One user: asks `turns` times (the questions in turn from `first`), each time listening
    to the whole reply before asking again. A failed turn is its error's text."""
    await asyncio.sleep(start_after)
    outcomes: list[TalkResult | str] = []
    for index in range(turns):
        pcm = pcms[(first + index) % len(pcms)]
        try:
            result = await talk(url, pcm, realtime=True, time_limit=120)
        except TalkError as err:
            outcomes.append(str(err))
            continue
        if not result.ok:
            outcomes.append(str(result.error))
            continue
        outcomes.append(result)
        await asyncio.sleep(len(result.audio) / 2 / SAMPLE_RATE)  # listening to the reply
    return outcomes


async def capacity_row(
    url: str, pcms: Sequence[bytes], sessions: int, turns: int
) -> dict[str, Any]:
    """`sessions` users at once, their starts spread over one question's length."""
    per_user = max(3, math.ceil(turns / sessions))
    spread = len(pcms[0]) / 2 / SAMPLE_RATE / sessions
    users = [user(url, pcms, per_user, n * spread, first=n) for n in range(sessions)]
    outcomes = [o for done in await asyncio.gather(*users) for o in done]
    results = [o for o in outcomes if isinstance(o, TalkResult)]
    client = [float(r.client_voice_to_voice_ms or 0) for r in results]
    stt = [float(r.metrics.stt_ms) for r in results if r.metrics and r.metrics.stt_ms is not None]
    first = [
        float(r.metrics.llm_first_token_ms)
        for r in results
        if r.metrics and r.metrics.llm_first_token_ms is not None
    ]
    return {
        "sessions": sessions,
        "turns": len(outcomes),
        "failed": len(outcomes) - len(results),
        "errors": sorted({o for o in outcomes if isinstance(o, str)}),
        "client_voice_to_voice_ms": {
            "p50": percentile(client, 50) if client else None,
            "p95": percentile(client, 95) if client else None,
        },
        "server_ms_p50": {
            "stt_ms": percentile(stt, 50) if stt else None,
            "llm_first_token_ms": percentile(first, 50) if first else None,
        },
    }


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_capacity(model: str, rows: Sequence[dict[str, Any]]) -> None:
    print(f"\ncapacity, {model}: concurrent push-to-talk sessions on one process")
    print("sessions  turns  failed  v2v p50 ms  v2v p95 ms  stt p50 ms  llm first token p50 ms")
    for row in rows:
        v2v, stages = row["client_voice_to_voice_ms"], row["server_ms_p50"]
        print(
            f"{row['sessions']:8d}  {row['turns']:5d}  {row['failed']:6d}  {_ms(v2v['p50']):>10}"
            f"  {_ms(v2v['p95']):>10}  {_ms(stages['stt_ms']):>10}"
            f"  {_ms(stages['llm_first_token_ms']):>22}"
        )


def print_side_by_side(summaries: Sequence[dict[str, Any]]) -> None:
    print("\nside by side (same run, same machine):")
    heads = [str(s["llm_model"]) for s in summaries]
    width = max(22, *(len(h) for h in heads))
    print(" " * 28 + "".join(h.rjust(width) for h in heads))
    rows: list[tuple[str, Any]] = [
        ("voice-to-voice p50 (client)", lambda s: s["client_voice_to_voice_ms"]["p50"]),
        ("voice-to-voice p95 (client)", lambda s: s["client_voice_to_voice_ms"]["p95"]),
    ]
    rows += [(f"server {n} p50", lambda s, n=n: s["server_ms_p50"][n]) for n in STAGES]
    for label, value in rows:
        print(label.ljust(28) + "".join(_ms(value(s)).rjust(width) for s in summaries))


# ---------------------------------------------------------------- main


def parse_sessions(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"want session counts like 1,2,4,8, not {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the question")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", default="artifacts/bench-local.json")
    parser.add_argument(
        "--llm-model",
        action="append",
        default=[],
        help="VOICE_FSM_LOCAL__LLM_MODEL (qwen2.5-coder-0.5b, smollm2-135m or a GGUF path); "
        "repeat it to compare models in one run. Unset: the server's default.",
    )
    parser.add_argument(
        "--builtins",
        action="append",
        default=[],
        choices=["auto", "on", "off"],
        help="VOICE_FSM_TOOLS__BUILTINS (the clock and calculator offered to the model); "
        "repeat it to compare in one run. Unset: the server's default (auto: on).",
    )
    parser.add_argument(
        "--sessions",
        type=parse_sessions,
        default=None,
        metavar="N,N,...",
        help="also measure N concurrent sessions for each N (e.g. 1,2,4,8); --turns turns in "
        "all per N, at least 3 per session",
    )
    args = parser.parse_args()

    pcms = questions(args.seconds)
    models: list[str | None] = list(args.llm_model) or [None]
    builtins: list[str | None] = list(args.builtins) or [None]
    runs = [(model, tools) for model in models for tools in builtins]
    summaries = []
    for llm_model, tools in runs:
        label = (llm_model or "default") + (f", builtins {tools}" if tools else "")
        if len(runs) > 1 or llm_model or tools:
            print(f"\n=== language model: {label}")
        port = args.port or free_port()
        with tempfile.TemporaryDirectory() as workdir:
            env = base_env(VOICE_FSM_LOG__FORMAT="json")  # no key: every stage is local
            if llm_model:
                env["VOICE_FSM_LOCAL__LLM_MODEL"] = llm_model
            if tools:
                env["VOICE_FSM_TOOLS__BUILTINS"] = tools
            server, _ = start_server(port, Path(workdir), env, timeout=600)
            url = f"ws://127.0.0.1:{port}/ws"
            try:
                results = asyncio.run(run_turns(url, pcms, args.turns))
                capacity = [
                    asyncio.run(capacity_row(url, pcms, n, args.turns)) for n in args.sessions or ()
                ]
            finally:
                stop_server(server)
        summary = report(results, len(pcms[0]) / 2 / SAMPLE_RATE)
        summary["llm_model"] = label
        if args.sessions:
            summary["capacity"] = capacity
            print_capacity(summary["llm_model"], capacity)
        summaries.append(summary)
    if len(summaries) > 1:
        print_side_by_side(summaries)
        for summary in summaries:
            if "capacity" in summary:
                print_capacity(summary["llm_model"], summary["capacity"])
    if len(summaries) > 1 or args.sessions:
        print("(a shared machine: figures are noisy, compare models from the same run)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = summaries[0] if len(summaries) == 1 else {"models": summaries, "machine": machine()}
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
