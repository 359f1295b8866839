"""The load test's second phase: the embedded engines behind `voice-fsm engines`, shared by
both serve processes as their OpenAI-compatible provider (transcriptions of the uploaded
recording, streamed chat, the Speech API), with Piper's spoken questions taking turns (one
question asked again and again would find its prompt in the language model's cache).

Sessions ramp 1, 2, 4, ... until voice-to-voice p95 passes `--engine-bound-ms` (3 s by
default: about five times `make bench-local`'s one-session p50 and twice the fakes' whole
provider path, where a caller starts to wonder whether they were heard) or an error appears.
Each engine runs one inference at a time, so here the engines are the limit, not the servers:
the engines' queue wait (``voice_fsm_engine_queue_wait_seconds`` from their /metrics, mean per
lane over the hold) shows it, beside the engines' CPU per turn and RSS.
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import base_env, free_port, stop_server
from loadtest_figures import cores, quantiles, read_turns, rss_mib

from voice_fsm.adapters.local.packages import local_engines_installed

ENGINES_KEY = "sk-loadtest-engines"
QUEUE_WAIT = "voice_fsm_engine_queue_wait_seconds"
START_TIMEOUT_S = 600.0  # loading the models from a cold disk


def voice_fsm() -> str:
    return str(Path(sys.executable).parent / "voice-fsm")


def engines_available() -> bool:
    """The embedded engines are installed and this voice-fsm has the `engines` command."""
    if not local_engines_installed():
        return False
    done = subprocess.run([voice_fsm(), "engines", "--help"], capture_output=True, check=False)
    return done.returncode == 0


def queue_wait(port: int) -> dict[str, tuple[float, float]]:
    """The engines' queue wait histogram: (sum of seconds, count) per engine."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = re.match(rf"{QUEUE_WAIT}_(sum|count)(\{{[^}}]*\}})? ([0-9.eE+-]+)$", line)
        if match:
            lane = re.search(r'engine="([^"]*)"', match[2] or "")
            key = lane[1] if lane else "all"
            index = 0 if match[1] == "sum" else 1
            found.setdefault(key, [0.0, 0.0])[index] += float(match[3])
    return {lane: (pair[0], pair[1]) for lane, pair in found.items()}


def read_waits_into(found: dict[str, tuple[float, float]], port: int) -> None:
    found.update(queue_wait(port))


def mean_wait_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float | None]:
    waits: dict[str, float | None] = {}
    for lane, (total, count) in after.items():
        was_total, was_count = before.get(lane, (0.0, 0.0))
        asked = count - was_count
        waits[lane] = round((total - was_total) / asked * 1000, 1) if asked else None
    return waits


def start_engines(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (workdir / "engines.log").open("wb")
    process = subprocess.Popen(
        [voice_fsm(), "engines", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=base_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"voice-fsm engines exited: see {workdir / 'engines.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"voice-fsm engines was not ready within {START_TIMEOUT_S:g} s")


def engines_env(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/v1"
    return base_env(
        OPENAI_API_KEY=ENGINES_KEY,
        VOICE_FSM_STT__PROVIDER="openai",
        VOICE_FSM_STT__BASE_URL=url,
        VOICE_FSM_STT__LIVE="false",
        VOICE_FSM_LLM__PROVIDER="openai",
        VOICE_FSM_LLM__BASE_URL=url,
        VOICE_FSM_TTS__PROVIDER="openai",
        VOICE_FSM_TTS__BASE_URL=url,
    )


def engine_phase(
    args: argparse.Namespace,
    serving_stack: Callable[..., Any],
    measure_step: Callable[..., tuple[dict[str, Any], list[dict[str, Any]], float]],
) -> dict[str, Any]:
    """Ramp sessions over both serve processes on one `voice-fsm engines`."""
    from local_latency import QUESTIONS, questions

    spoken = [question.padded for question in questions(args.seconds, QUESTIONS)]
    phase = argparse.Namespace(**{**vars(args), "hold": args.engine_hold, "settle": 10.0})
    steps: list[dict[str, Any]] = []
    stopped = f"reached the last of --engine-steps ({args.engine_steps[-1]})"
    with tempfile.TemporaryDirectory(prefix="loadtest-engines-") as workdir:
        engines, port = start_engines(Path(workdir))
        try:
            with serving_stack(
                engines_env(port), Path(workdir), spoken, args.client_processes
            ) as stack:
                baseline = [rss_mib(pid) or 0.0 for pid in stack.server_pids]
                groups = {
                    "servers": stack.server_pids,
                    "engines": [engines.pid],
                    "haproxy": [stack.haproxy.pid],
                    "clients": stack.client_pids,
                }
                for sessions in args.engine_steps:
                    phase.ramp = min(args.ramp, 0.5 * sessions)
                    waits_before: dict[str, tuple[float, float]] = {}
                    as_hold_begins = functools.partial(read_waits_into, waits_before, port)
                    step, records, held = measure_step(
                        stack, sessions, phase, groups, baseline, on_hold=as_hold_begins
                    )
                    turns = read_turns(records, None, live=False)
                    engine_cpu = step["cores_busy"]["engines"] * held
                    v2v = quantiles(turns.voice_to_voice_ms)
                    step.update(
                        {
                            "turns": turns.turns,
                            "server_failed_turns": turns.failed,
                            "server_outcomes": dict(turns.outcomes),
                            "server_voice_to_voice_ms": v2v,
                            "queue_wait_mean_ms": mean_wait_ms(waits_before, queue_wait(port)),
                            "engines_cpu_per_turn_ms": round(engine_cpu * 1000 / turns.turns)
                            if turns.turns
                            else None,
                            "server_cpu_per_turn_ms": round(
                                step["server_cpu_s"] * 1000 / turns.turns, 2
                            )
                            if turns.turns
                            else None,
                            "engines_rss_mib": rss_mib(engines.pid),
                        }
                    )
                    p95 = v2v.get("p95")
                    step["within_bound"] = bool(
                        step["errors"] == 0
                        and turns.failed == 0
                        and p95 is not None
                        and p95 <= args.engine_bound_ms
                    )
                    steps.append(step)
                    print_engine_step(step)
                    if not step["within_bound"]:
                        stopped = (
                            f"errors at {sessions} sessions"
                            if step["errors"] or turns.failed
                            else f"voice-to-voice p95 above {args.engine_bound_ms:g} ms at "
                            f"{sessions} sessions"
                        )
                        break
        finally:
            stop_server(engines, wait_s=30)  # the engines' own grace for requests in flight
    held_steps = [step for step in steps if step["within_bound"]]
    best = held_steps[-1] if held_steps else None
    return {
        "bound_ms": args.engine_bound_ms,
        "steps": steps,
        "stopped": stopped,
        "capacity": None
        if best is None
        else {
            "sessions": best["sessions"],
            "per_core": round(best["sessions"] / cores(), 2),
            "voice_to_voice_p95_ms": best["server_voice_to_voice_ms"].get("p95"),
            "engines_cpu_per_turn_ms": best["engines_cpu_per_turn_ms"],
            "queue_wait_mean_ms": best["queue_wait_mean_ms"],
        },
    }


def print_engine_step(step: dict[str, Any]) -> None:
    v2v = step["server_voice_to_voice_ms"]
    print(
        f"engines, {step['sessions']} sessions "
        f"({'+'.join(str(n) for n in step['sessions_per_process'])} per process): "
        f"{step['turns']} turns, {step['errors']} errors; voice-to-voice p50 "
        f"{v2v.get('p50', '-')} p95 {v2v.get('p95', '-')} ms; queue wait mean "
        f"{step['queue_wait_mean_ms']} ms; engines CPU {step['engines_cpu_per_turn_ms']} ms/turn,"
        f" servers {step['server_cpu_per_turn_ms']} ms/turn; engines RSS "
        f"{step['engines_rss_mib']} MiB; cores busy {step['cores_busy']}; load "
        f"{step['load_average'][0]}",
        flush=True,
    )
    if step["error_samples"]:
        print(f"      errors: {step['error_samples']}", flush=True)
