"""Voice-to-voice latency of the embedded offline engines, as a client sees it.

Starts `voice-fsm serve` with no API key (so every stage is local), speaks short questions
made with Piper into it turn after turn at the pace of speech (push-to-talk), each preceded by
silence to `--seconds` and sent up to the END OF SPEECH (the end of Piper's audible speech),
where the user lets go of the button, and reports the time from there to the first reply audio
byte at the client: p50 and p95, with the server's per-stage breakdown. (Padding after the
speech would start the clock late: the server may finish decoding in the pause before the
stop.)
Then the same questions hands-free: streamed with silence after them and no stop, the turn
ended by the server's detector (a 500 ms silence window), timed from the end of speech too.
A failed or timed-out turn counts as the timeout (30 s) and is counted beside every figure.
Writes the figures as JSON too (with --readme also docs/bench/bench-local.json, which `make
docs` puts into the README).

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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    REPO,
    TURN_TIMEOUT_S,
    base_env,
    current_tree,
    free_port,
    load_average,
    machine,
    percentile,
    spread,
    start_server,
    stop_server,
)
from hands_free_client import hands_free_turn, trim_speech

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.talk import TalkError, TalkResult, talk
from voice_fsm.testing.speech import silence, spoken

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
SILENCE_WINDOW_MS = 500
README_JSON = REPO / "docs" / "bench" / "bench-local.json"


@dataclass(frozen=True)
class Question:
    speech: bytes
    """Piper's speech up to its end (its trailing near-silence cut off)."""
    padded: bytes
    """Silence and then the speech, to the question's length: what push-to-talk sends, the
    stop going out right after the end of speech."""


def questions(seconds: float, texts: Sequence[str] = QUESTIONS) -> list[Question]:
    """Each of `texts` spoken by Piper, preceded by silence to `seconds`."""
    out = []
    for text in texts:
        speech = trim_speech(spoken(text))
        length = len(speech) / 2 / SAMPLE_RATE
        if length > seconds + 0.01:
            raise SystemExit(f"--seconds {seconds}: {text!r} takes {length:.2f} s")
        out.append(Question(speech, silence(seconds - length) + speech))
    return out


def from_end_of_speech(result: TalkResult, question: Question) -> float | None:
    """End of speech to the first reply audio at the client (ms): the stop goes out right
    after the speech's last frame (`question.padded` ends where the speech does)."""
    if result.stop_sent_at is None or result.first_audio_at is None:
        return None
    assert question.padded.endswith(question.speech)
    return (result.first_audio_at - result.stop_sent_at) * 1000


@dataclass
class Turns:
    """Push-to-talk turns: the results, their voice-to-voice from the end of speech (ms), and
    the failures' errors."""

    results: list[TalkResult]
    from_speech: list[float]
    failed: list[str]


async def run_turns(url: str, pcms: Sequence[Question], turns: int) -> Turns:
    (warm_up,) = questions(len(pcms[0].padded) / 2 / SAMPLE_RATE, (WARM_UP,))
    warm = await talk(url, warm_up.padded, realtime=True)  # the first connection, not counted
    if not warm.ok:
        raise SystemExit(f"warm-up turn failed: {warm.error}")
    done = Turns([], [], [])
    for index in range(turns):
        question = pcms[index % len(pcms)]
        try:
            result = await talk(url, question.padded, realtime=True, time_limit=TURN_TIMEOUT_S)
        except TalkError as err:
            done.failed.append(str(err))
            print(f"turn {index + 1:2d}: failed: {err}")
            continue
        v2v = from_end_of_speech(result, question)
        if not result.ok or result.metrics is None or v2v is None:
            done.failed.append(str(result.error or "no audio"))
            print(f"turn {index + 1:2d}: failed: {result.error or 'no audio'}")
            continue
        done.results.append(result)
        done.from_speech.append(v2v)
        m = result.metrics
        print(
            f"turn {index + 1:2d}: voice-to-voice {v2v:5.0f} ms from the end of speech "
            f"({m.voice_to_voice_ms} at the server: stt {m.stt_ms}, llm first token "
            f"{m.llm_first_token_ms}, llm {m.llm_ms}, tts first audio {m.tts_first_audio_ms}): "
            f"{result.transcript!r} -> {result.reply!r}"
        )
    return done


async def run_hands_free(url: str, pcms: Sequence[Question], turns: int) -> dict[str, Any]:
    """`turns` hands-free turns (a new session each): the questions' speech, then silence until
    the reply; voice-to-voice from the end of speech, failures counted as the timeout."""
    warm = await hands_free_turn(url, pcms[0].speech)
    if not warm.ok:
        raise SystemExit(f"hands-free warm-up turn failed: {warm.error}")
    v2v, server, failed = [], [], []
    for index in range(turns):
        turn = await hands_free_turn(url, pcms[index % len(pcms)].speech, time_limit=TURN_TIMEOUT_S)
        if not turn.ok or turn.voice_to_voice_ms is None:
            failed.append(str(turn.error))
            print(f"hands-free turn {index + 1:2d}: failed: {turn.error}")
            continue
        v2v.append(turn.voice_to_voice_ms)
        if turn.metrics is not None and turn.metrics.voice_to_voice_ms is not None:
            server.append(float(turn.metrics.voice_to_voice_ms))
        print(
            f"hands-free turn {index + 1:2d}: voice-to-voice {turn.voice_to_voice_ms:5.0f} ms "
            f"from the end of speech ({turn.detector_stop_ms or 0:.0f} to vad.speech_stopped); "
            f"{turn.transcript!r} -> {turn.reply!r}"
        )
    return {
        "silence_window_ms": SILENCE_WINDOW_MS,
        "turns": len(v2v) + len(failed),
        "errors": len(failed),
        "first_errors": sorted(set(failed))[:5],
        "voice_to_voice_ms": spread(v2v, len(failed)),
        "server_voice_to_voice_ms": spread(server, len(failed)),
    }


def report(done: Turns, pcms: Sequence[Question]) -> dict[str, Any]:
    results, lost = done.results, len(done.failed)
    per_stage = {
        name: [float(v) for r in results if (v := getattr(r.metrics, name)) is not None]
        for name in STAGES
    }
    speech_s = [len(q.speech) / 2 / SAMPLE_RATE for q in pcms]
    summary: dict[str, Any] = {
        "turns": len(results) + lost,
        "errors": lost,
        "first_errors": sorted(set(done.failed))[:5],
        "question_s": round(len(pcms[0].padded) / 2 / SAMPLE_RATE, 2),
        "speech_s": [round(s, 2) for s in speech_s],
        "exchanges": [[r.transcript, r.reply] for r in results],
        "note": "voice-to-voice from the end of speech (the end of Piper's audible speech, "
        "where input_audio.stop goes out) to the first reply audio at the client",
        "client_voice_to_voice_ms": spread(done.from_speech, lost),
        "server_ms_p50": {n: percentile(v, 50) if v else None for n, v in per_stage.items()},
        "server_ms_p95": {n: percentile(v, 95) if v else None for n, v in per_stage.items()},
        "machine": machine(),
    }
    print()
    print(
        f"{len(pcms)} questions in turn ({min(speech_s):.2f}-{max(speech_s):.2f} s of speech, "
        f"silence before it to {summary['question_s']} s), {summary['turns']} turns, "
        f"{lost} errors"
    )
    v2v = summary["client_voice_to_voice_ms"]
    print(
        f"push-to-talk voice-to-voice from the end of speech: p50 {v2v.get('p50', 0):.0f} ms, "
        f"p95 {v2v.get('p95', 0):.0f} ms, errors {lost}"
    )
    print("server stages, p50 / p95 ms:")
    for name in STAGES:
        p50, p95 = summary["server_ms_p50"][name], summary["server_ms_p95"][name]
        print(f"  {name:20s} {p50 or 0:6.0f} / {p95 or 0:6.0f}")
    return summary


def print_hands_free(figures: dict[str, Any]) -> None:
    v2v, server = figures["voice_to_voice_ms"], figures["server_voice_to_voice_ms"]
    print(
        f"hands-free voice-to-voice from the end of speech ({figures['silence_window_ms']} ms "
        f"silence window): p50 {v2v.get('p50', 0):.0f} ms, p95 {v2v.get('p95', 0):.0f} ms, "
        f"errors {figures['errors']} (the server's, from its detector's stop: p50 "
        f"{server.get('p50', 0):.0f})"
    )


# ---------------------------------------------------------------- capacity


async def user(
    url: str, pcms: Sequence[Question], turns: int, start_after: float, first: int
) -> list[tuple[TalkResult, float] | str]:
    """One user: asks `turns` times (the questions in turn from `first`), each time listening
    to the whole reply before asking again. A turn is its result and its voice-to-voice from
    the end of speech, or a failed turn its error's text."""
    await asyncio.sleep(start_after)
    outcomes: list[tuple[TalkResult, float] | str] = []
    for index in range(turns):
        question = pcms[(first + index) % len(pcms)]
        try:
            result = await talk(url, question.padded, realtime=True, time_limit=120)
        except TalkError as err:
            outcomes.append(str(err))
            continue
        v2v = from_end_of_speech(result, question)
        if not result.ok or v2v is None:
            outcomes.append(str(result.error or "no audio"))
            continue
        outcomes.append((result, v2v))
        await asyncio.sleep(len(result.audio) / 2 / SAMPLE_RATE)  # listening to the reply
    return outcomes


async def capacity_row(
    url: str, pcms: Sequence[Question], sessions: int, turns: int
) -> dict[str, Any]:
    """`sessions` users at once, their starts spread over one question's length; failed turns
    count as the timeout."""
    per_user = max(3, math.ceil(turns / sessions))
    apart = len(pcms[0].padded) / 2 / SAMPLE_RATE / sessions
    users = [user(url, pcms, per_user, n * apart, first=n) for n in range(sessions)]
    outcomes = [o for done in await asyncio.gather(*users) for o in done]
    results = [o[0] for o in outcomes if not isinstance(o, str)]
    failed = len(outcomes) - len(results)
    v2v = spread([o[1] for o in outcomes if not isinstance(o, str)], failed)
    stt = [float(r.metrics.stt_ms) for r in results if r.metrics and r.metrics.stt_ms is not None]
    first = [
        float(r.metrics.llm_first_token_ms)
        for r in results
        if r.metrics and r.metrics.llm_first_token_ms is not None
    ]
    return {
        "sessions": sessions,
        "turns": len(outcomes),
        "failed": failed,
        "errors": sorted({o for o in outcomes if isinstance(o, str)}),
        "client_voice_to_voice_ms": {"p50": v2v.get("p50"), "p95": v2v.get("p95")},
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
        "--hands-free-turns", type=int, default=None,
        help="hands-free turns after the push-to-talk ones (default: --turns; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--readme", action="store_true",
        help=f"also write {README_JSON.relative_to(REPO)}, the figures `make docs` puts into "
        "the README",
    )  # fmt: skip
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
    hands_free_turns = args.turns if args.hands_free_turns is None else args.hands_free_turns
    load_before = load_average()

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
            env = base_env(  # no key: every stage is local
                VOICE_FSM_LOG__FORMAT="json",
                VOICE_FSM_VAD__MIN_SILENCE_MS=str(SILENCE_WINDOW_MS),
            )
            if llm_model:
                env["VOICE_FSM_LOCAL__LLM_MODEL"] = llm_model
            if tools:
                env["VOICE_FSM_TOOLS__BUILTINS"] = tools
            server, _ = start_server(port, Path(workdir), env, timeout=600)
            url = f"ws://127.0.0.1:{port}/ws"
            try:
                results = asyncio.run(run_turns(url, pcms, args.turns))
                hands_free = (
                    asyncio.run(run_hands_free(url, pcms, hands_free_turns))
                    if hands_free_turns
                    else None
                )
                capacity = [
                    asyncio.run(capacity_row(url, pcms, n, args.turns)) for n in args.sessions or ()
                ]
            finally:
                stop_server(server)
        summary = report(results, pcms)
        summary["llm_model"] = label
        if hands_free is not None:
            summary["hands_free"] = hands_free
            print_hands_free(hands_free)
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
    load = {"before": load_before, "after": load_average()}
    print(f"load average (1, 5, 15 min) before and after: {load['before']}, {load['after']}")
    data = {
        "bench": "make bench-local",
        "arguments": vars(args),
        "code": current_tree(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": load,
        **data,
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    if args.readme:
        README_JSON.parent.mkdir(parents=True, exist_ok=True)
        README_JSON.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {README_JSON.relative_to(REPO)}: run `make docs` to put it in the README")


if __name__ == "__main__":
    main()
