"""Capacity: how many real-time talking sessions two `voice-fsm serve` processes behind HAProxy
hold on this machine, and what each costs.

Starts the fake providers (OpenAI's HTTP API and Realtime WebSocket with the original design's
latency profile, `make bench`'s setup: live transcription and speech over Realtime sessions) in
processes of their own, two `voice-fsm serve` processes pointed at them, Debian's HAProxy in
front with deploy/haproxy.cfg, and the load clients in processes of their own
(bench/loadtest_clients.py: each session sends a 2 s question in 100 ms frames at the pace of
speech, push-to-talk, reads the reply without playing it but waits as long as it would play,
pauses 1-3 s and asks again).
Then it ramps the sessions step by step (`--steps`), each step: the new sessions start over
`--ramp` s, `--settle` s pass, and `--hold` s are measured. Per step it prints the sessions (and
each process's share), turns, errors, the server overhead p50/p99 from the servers'
``turn.completed`` lines (bench/loadtest_figures.py: voice-to-voice beyond the profile's
critical path, as `make bench` defines it) and its biggest part, the serve processes' CPU per
turn, memory per session (their RSS growth over the idle baseline, per session) and RSS, and
the cores busy in the servers, HAProxy, the fakes and the clients, with the load average. It
stops at the first step whose overhead p99 passes `--limit-ms` (100) or that has an error.

Then, with `--engines` (the default when the embedded engines are installed), the same with
the embedded engines behind `voice-fsm engines` instead of the fakes: both serve processes use
it as their OpenAI-compatible provider, and sessions ramp 1, 2, 4, ... until voice-to-voice
p95 passes `--engine-bound-ms`; the engines, not the servers, are the limit there, and their
queue wait (from their /metrics) says so.

Writes artifacts/loadtest.json; with --readme also docs/bench/loadtest.json, which `make docs`
puts into the README's capacity table.

    make loadtest                     # or: .venv/bin/python bench/loadtest.py
    make loadtest ARGS="--steps 100,300,500,700 --hold 40 --no-engines"
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
from common import (
    REPO,
    current_tree,
    free_port,
    load_average,
    machine,
    start_server,
    stop_server,
)
from loadtest_clients import FRAME_MS, PAUSE_S, client_process
from loadtest_engines import engine_phase, engines_available
from loadtest_fakes import FakeProviders
from loadtest_figures import (
    LogTail,
    biggest_part,
    cores,
    cpu_of,
    quantiles,
    read_turns,
    rss_mib,
    system_cpu_of,
)
from loadtest_haproxy import running_haproxy
from voice_latency import server_env

from voice_fsm.talk import TalkError, talk
from voice_fsm.testing.latency_profile import (
    DEFAULT_PROFILE,
    REPLY,
    LatencyProfile,
    pipelined_stages,
)
from voice_fsm.testing.speech import voiced

README_JSON = REPO / "docs" / "bench" / "loadtest.json"
ZERO_PROFILE = LatencyProfile(
    stt_base_s=0.0,
    stt_per_audio_s=0.0,
    live_final_s=0.0,
    live_delta_every_ms=200,
    llm_first_token_s=0.0,
    llm_tokens_per_s=1e6,
    tts_first_audio_s=0.0,
    tts_realtime_factor=1e6,
    realtime_connect_s=0.0,
)
"""For the bench's own test: providers that answer at once."""


# ---------------------------------------------------------------- the processes


@dataclass
class Stack:
    """Two serve processes, HAProxy in front, and the client processes."""

    servers: list[subprocess.Popen[bytes]]
    ports: list[int]
    tails: list[LogTail]
    haproxy: subprocess.Popen[bytes]
    clients: list[BaseProcess]
    pipes: list[Connection]
    sessions: int = 0

    def grow(self, sessions: int, ramp_s: float) -> None:
        count = len(self.pipes)
        for index, pipe in enumerate(self.pipes):
            pipe.send(("sessions", sessions // count + (index < sessions % count), ramp_s))
        self.sessions = sessions

    def reports(self) -> dict[str, Any]:
        """The clients' turns, errors and loop lag since the last call, and their sessions."""
        merged: dict[str, Any] = {"turns": [], "errors": [], "lag_ms": [], "sessions": 0}
        for pipe in self.pipes:
            pipe.send(("report",))
            report = pipe.recv()
            for key in ("turns", "errors", "lag_ms"):
                merged[key] += report[key]
            merged["sessions"] += report["sessions"]
        return merged

    def per_process(self) -> list[int | None]:
        """Each serve process's live sessions, from its /healthz."""
        counts: list[int | None] = []
        for port in self.ports:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
                counts.append(int(health["sessions"]))
            except (httpx.HTTPError, KeyError, ValueError):
                counts.append(None)
        return counts

    @property
    def server_pids(self) -> list[int]:
        return [server.pid for server in self.servers]

    @property
    def client_pids(self) -> list[int]:
        return [p.pid for p in self.clients if p.pid is not None]


def serve_env(env: dict[str, str]) -> dict[str, str]:
    """What every serve process is told besides its providers: HAProxy is a trusted proxy (so
    X-Forwarded-For counts), and every simulated user is 127.0.0.1 (no per-client cap)."""
    return {
        **env,
        "VOICE_FSM_SERVER__TRUSTED_PROXIES": "127.0.0.1",
        "VOICE_FSM_LIMITS__MAX_SESSIONS_PER_CLIENT": "100000",
        "VOICE_FSM_LOG__FORMAT": "json",
    }


@contextmanager
def serving_stack(
    env: dict[str, str], workdir: Path, questions: list[bytes], client_processes: int
) -> Iterator[Stack]:
    """Two serve processes with `env`, each warmed up by one turn, HAProxy in front, and
    `client_processes` load client processes talking through HAProxy."""
    servers: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    clients: list[BaseProcess] = []
    pipes: list[Connection] = []
    with ExitStack() as cleanup:
        for index, port in enumerate(ports, start=1):
            folder = workdir / f"fsm{index}"
            folder.mkdir()
            server, _ = start_server(port, folder, serve_env(env), timeout=300)
            servers.append(server)
            cleanup.callback(stop_server, server)
        for port in ports:  # the first turn imports and connects: not measured
            try:
                warm = asyncio.run(talk(f"ws://127.0.0.1:{port}/ws", questions[0], realtime=True))
            except TalkError as err:
                raise SystemExit(f"warm-up turn on port {port}: {err}") from err
            if not warm.ok:
                raise SystemExit(f"warm-up turn on port {port} failed: {warm.error}")
        haproxy, proxy_port = cleanup.enter_context(
            running_haproxy(workdir, [(f"fsm{i}", p) for i, p in enumerate(ports, start=1)])
        )
        context = multiprocessing.get_context("spawn")
        url = f"ws://127.0.0.1:{proxy_port}/ws"
        for index in range(client_processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=client_process, args=(theirs, url, questions, index), daemon=True
            )
            process.start()
            clients.append(process)
            pipes.append(ours)
        cleanup.callback(_stop_clients, clients, pipes)
        tails = [LogTail(workdir / f"fsm{i}" / "server.log") for i in (1, 2)]
        yield Stack(servers, ports, tails, haproxy, clients, pipes)


def _stop_clients(clients: list[BaseProcess], pipes: list[Connection]) -> None:
    for pipe in pipes:
        try:
            pipe.send(("stop",))
            pipe.poll(30) and pipe.recv()
        except (OSError, EOFError):
            pass
    for process in clients:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


# ---------------------------------------------------------------- one step


def measure_step(
    stack: Stack,
    sessions: int,
    args: argparse.Namespace,
    groups: dict[str, list[int]],
    baseline_rss: list[float],
    on_hold: Callable[[], object] = lambda: None,
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """Grow to `sessions`, settle, then measure `args.hold` seconds (`on_hold` is called as it
    begins). Returns the figures the fakes and engines share (clients, CPU, memory, load), the
    servers' log lines of the hold, and its length."""
    stack.grow(sessions, args.ramp)
    time.sleep(args.ramp + args.settle)
    before = stack.reports()
    for tail in stack.tails:
        tail.read()  # skip what was logged before the hold
    on_hold()
    cpu_before = {name: cpu_of(pids) for name, pids in groups.items()}
    system_before = system_cpu_of(stack.server_pids)
    started = time.monotonic()
    time.sleep(args.hold)
    after = stack.reports()
    held = time.monotonic() - started
    cpu = {name: cpu_of(pids) - cpu_before[name] for name, pids in groups.items()}
    system = system_cpu_of(stack.server_pids) - system_before
    records = [record for tail in stack.tails for record in tail.read()]
    per_process = stack.per_process()
    rss = [rss_mib(pid) or 0.0 for pid in stack.server_pids]
    client_turns = after["turns"]
    errors = before["errors"] + after["errors"]
    growth = sum(rss) - sum(baseline_rss)
    step: dict[str, Any] = {
        "sessions": sessions,
        "sessions_open": after["sessions"],
        "sessions_per_process": per_process,
        "hold_s": round(held, 1),
        "client_turns": len(client_turns),
        "errors": len(errors),
        "error_samples": errors[:5],
        "client_voice_to_voice_ms": quantiles(
            [t["client_voice_to_voice_ms"] for t in client_turns if t["ok"]]
        ),
        "clients_loop_lag_ms": quantiles(after["lag_ms"]),
        "cores_busy": {name: round(seconds / held, 2) for name, seconds in cpu.items()},
        "server_cpu_s": round(cpu["servers"], 2),
        "server_cpu_system_share": round(system / cpu["servers"], 2) if cpu["servers"] else None,
        "rss_mib": rss,
        "rss_growth_mib": round(growth, 1),
        "memory_per_session_kib": round(growth * 1024 / sessions, 1) if sessions else None,
        "load_average": load_average(),
    }
    return step, records, held


def fakes_step(
    stack: Stack,
    sessions: int,
    args: argparse.Namespace,
    groups: dict[str, list[int]],
    baseline_rss: list[float],
    fakes: FakeProviders,
    profile: LatencyProfile,
) -> dict[str, Any]:
    step, records, held = measure_step(
        stack, sessions, args, groups, baseline_rss, on_hold=fakes.report
    )
    turns = read_turns(records, profile, live=args.providers == "realtime")
    parts = {name: quantiles(values) for name, values in turns.parts_ms.items()}
    step.update(
        {
            "turns": turns.turns,
            "turns_per_s": round(turns.turns / held, 1),
            "server_failed_turns": turns.failed,
            "server_outcomes": dict(turns.outcomes),
            "server_log_problems": dict(turns.problems),
            "preemptive_turns": turns.preemptive,
            "overhead_ms": quantiles(turns.overhead_ms),
            "overhead_parts_ms": parts,
            "biggest_part": biggest_part(parts),
            "server_voice_to_voice_ms": quantiles(turns.voice_to_voice_ms),
            "cpu_per_turn_ms": round(step["server_cpu_s"] * 1000 / turns.turns, 2)
            if turns.turns
            else None,
            **fakes_figures(fakes.report(), turns.turns),
        }
    )
    p99 = step["overhead_ms"].get("p99")
    step["within_limit"] = bool(
        step["errors"] == 0
        and turns.failed == 0
        and turns.turns > 0
        and p99 is not None
        and p99 <= args.limit_ms
    )
    return step


def fakes_figures(report: dict[str, Any], turns: int) -> dict[str, Any]:
    """The fakes' loop lag, and the Realtime sessions the servers opened per turn: a speech
    session opened for a turn, not taken ready from the pool, costs its handshake at once."""
    opened = report["realtime_handshakes"]
    return {
        "fakes_loop_lag_ms": report["loop_lag_ms"],
        "realtime_sessions_opened_per_turn": {
            kind: round(count / turns, 2) for kind, count in sorted(opened.items())
        }
        if turns
        else {},
    }


def print_step(step: dict[str, Any]) -> None:
    over, busy = step["overhead_ms"], step["cores_busy"]
    shares = ", ".join(f"{name} {value:.2f}" for name, value in busy.items())
    again = "again: " if step.get("attempt", 1) > 1 else ""
    print(
        f"{again}{step['sessions']:5d} sessions "
        f"({'+'.join(str(n) for n in step['sessions_per_process'])}"
        f" per process): {step['turns']} turns ({step['turns_per_s']}/s), "
        f"{step['errors']} errors, {step['server_failed_turns']} failed at the server; "
        f"overhead p50 {over.get('p50', '-')} p99 {over.get('p99', '-')} ms "
        f"(biggest part: {step['biggest_part']}); CPU {step['cpu_per_turn_ms']} ms/turn "
        f"({step['server_cpu_system_share']} in the kernel); "
        f"{step['memory_per_session_kib']} KiB/session, RSS {step['rss_mib']} MiB; "
        f"cores busy: {shares}; load {step['load_average'][0]}",
        flush=True,
    )
    parts = step["overhead_parts_ms"]
    print(
        "      parts p50/p99 ms: "
        + ", ".join(f"{k} {v.get('p50', '-')}/{v.get('p99', '-')}" for k, v in parts.items())
        + f"; client v2v p99 {step['client_voice_to_voice_ms'].get('p99', '-')}; loop lag p99"
        f" clients {step['clients_loop_lag_ms'].get('p99', '-')}, fakes "
        f"{step['fakes_loop_lag_ms'].get('p99', '-')} ms; Realtime sessions opened per turn "
        f"{step['realtime_sessions_opened_per_turn']}",
        flush=True,
    )
    if step["error_samples"]:
        print(f"      errors: {step['error_samples']}", flush=True)


# ---------------------------------------------------------------- the phases


def fakes_phase(args: argparse.Namespace, profile: LatencyProfile) -> dict[str, Any]:
    question = voiced(args.seconds)
    audio_s = len(question) / 2 / 24_000
    live = args.providers == "realtime"
    fakes = FakeProviders.start(profile, free_port(), args.fake_processes)
    steps: list[dict[str, Any]] = []
    stopped = f"reached --max-sessions {args.max_sessions}"
    try:
        env = server_env(fakes.base_url, realtime=live, tts="realtime" if live else "speech")
        with (
            tempfile.TemporaryDirectory(prefix="loadtest-") as workdir,
            serving_stack(env, Path(workdir), [question], args.client_processes) as stack,
        ):
            baseline = [rss_mib(pid) or 0.0 for pid in stack.server_pids]
            groups = {
                "servers": stack.server_pids,
                "haproxy": [stack.haproxy.pid],
                "fakes": fakes.pids,
                "clients": stack.client_pids,
            }
            print(f"idle serve processes: RSS {baseline} MiB", flush=True)
            again = argparse.Namespace(**{**vars(args), "ramp": 0.0, "settle": 0.0})
            for sessions in [n for n in args.steps if n <= args.max_sessions]:
                for attempt in range(1, args.retries + 2):
                    held_as = again if attempt > 1 else args
                    step = fakes_step(stack, sessions, held_as, groups, baseline, fakes, profile)
                    step["attempt"] = attempt
                    steps.append(step)
                    print_step(step)
                    keep_logs(Path(workdir), args.logs, "fakes")
                    # Errors are never retried: only a hold over the limit, once more.
                    if step["within_limit"] or step["errors"] or step["server_failed_turns"]:
                        break
                if not step["within_limit"]:
                    stopped = (
                        f"{step['errors']} errors at {sessions} sessions"
                        if step["errors"] or step["server_failed_turns"]
                        else f"overhead p99 above {args.limit_ms:g} ms at {sessions} sessions"
                    )
                    break
    finally:
        fakes.stop()
    stages = pipelined_stages(profile, audio_s, REPLY, live=live)
    return {
        "providers": "make bench's: live transcription and speech over Realtime sessions"
        if live
        else "over HTTP: uploaded recordings, streamed chat, the Speech API",
        "profile": dataclasses.asdict(profile),
        "critical_path_ms": {k: round(v * 1000, 1) for k, v in stages.items()},
        "idle_rss_mib": baseline,
        "steps": steps,
        "stopped": stopped,
        "capacity": capacity(steps, args.limit_ms),
    }


def keep_logs(workdir: Path, keep: str | None, phase: str) -> None:
    """Copy the serve processes' logs into `keep` (when given), named by phase."""
    if keep is None:
        return
    Path(keep).mkdir(parents=True, exist_ok=True)
    for log in sorted(workdir.glob("fsm*/server.log")):
        shutil.copyfile(log, Path(keep) / f"{phase}-{log.parent.name}.log")


def capacity(steps: list[dict[str, Any]], limit_ms: float) -> dict[str, Any] | None:
    """The largest step within the limit: sessions per process and core, its CPU and memory."""
    held = [step for step in steps if step["within_limit"]]
    if not held:
        return None
    best = held[-1]
    return {
        "sessions": best["sessions"],
        "per_process": best["sessions"] / 2,
        "per_core": round(best["sessions"] / cores(), 1),
        "overhead_p99_ms": best["overhead_ms"]["p99"],
        "limit_ms": limit_ms,
        "cpu_per_turn_ms": best["cpu_per_turn_ms"],
        "memory_per_session_kib": best["memory_per_session_kib"],
    }


def parse_steps(text: str) -> list[int]:
    steps = sorted({int(part) for part in text.split(",") if part.strip()})
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError("steps: positive session counts, e.g. 100,200,300")
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        type=parse_steps,
        default=parse_steps("50,100,150,200,250,300,400,500,600,700,800"),
    )
    parser.add_argument("--max-sessions", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=10.0, help="s to start a step's sessions")
    parser.add_argument("--settle", type=float, default=10.0, help="s before measuring")
    parser.add_argument("--hold", type=float, default=40.0, help="s measured per step")
    parser.add_argument("--limit-ms", type=float, default=100.0, help="overhead p99 limit")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="holds measured again, straight away, when one passes the limit without an error "
        "(the machine is shared: a neighbour's burst can spoil one hold); every hold is kept",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the question")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--fake-processes", type=int, default=2)
    parser.add_argument(
        "--providers",
        choices=("realtime", "http"),
        default="realtime",
        help="realtime: make bench's (live transcription, speech over Realtime); http: uploads "
        "and the Speech API",
    )
    parser.add_argument("--zero-latency", action="store_true", help="fakes that answer at once")
    parser.add_argument("--engines", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--engine-steps", type=parse_steps, default=parse_steps("1,2,4,8"))
    parser.add_argument("--engine-hold", type=float, default=60.0)
    parser.add_argument(
        "--engine-bound-ms",
        type=float,
        default=3000.0,
        help="voice-to-voice p95 past which the engines' sessions stop growing",
    )
    parser.add_argument("--out-dir", default="artifacts")
    parser.add_argument("--logs", help="a folder to keep the serve processes' logs in")
    parser.add_argument("--readme", action="store_true", help="also docs/bench/loadtest.json")
    return parser.parse_args(argv)


def stop_cleanly(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT, which a shell's background job ignores) unwinds like ^C, so the
    servers, HAProxy, the fakes and the clients are stopped on the way out; a second one
    ends the bench at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_cleanly)
    signal.signal(signal.SIGINT, stop_cleanly)
    profile = ZERO_PROFILE if args.zero_latency else DEFAULT_PROFILE
    load_before = load_average()
    print(f"load average before: {load_before} ({cores()} cores)", flush=True)
    summary: dict[str, Any] = {
        "bench": "make loadtest",
        "arguments": {k: v for k, v in vars(args).items() if k != "readme"},
        "code": current_tree(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "question_s": args.seconds,
        "frame_ms": FRAME_MS,
        "pause_s": list(PAUSE_S),
        "fakes": fakes_phase(args, profile),
    }
    engines = engines_available() if args.engines is None else args.engines
    if engines:
        summary["engines"] = engine_phase(args, serving_stack, measure_step)
    summary["machine"] = {
        **machine(),
        "load_average": {"before": load_before, "after": load_average()},
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2) + "\n"
    (out_dir / "loadtest.json").write_text(text)
    print(f"wrote {out_dir / 'loadtest.json'}")
    if args.readme:
        README_JSON.write_text(text)
        print(f"wrote {README_JSON.relative_to(REPO)}: run `make docs` to put it in the README")
    cap = summary["fakes"]["capacity"]
    print(f"capacity: {cap}; stopped: {summary['fakes']['stopped']}")
    return summary


if __name__ == "__main__":
    main()
