"""The README's benchmark figures, drawn from the runs committed under docs/bench/.

`make bench ARGS=--readme` writes docs/bench/bench.json and `make bench-local ARGS=--readme`
docs/bench/bench-local.json; `make docs` (voice_fsm.docs_gen) puts `render()` between the
README's ``<!-- bench:begin -->`` and ``<!-- bench:end -->``, and tests/test_docs.py fails when
that block is not what the committed JSON gives. Likewise `make loadtest ARGS=--readme` writes
docs/bench/loadtest.json and `render_capacity()` goes between ``<!-- capacity:begin -->`` and
``<!-- capacity:end -->`` (`blocks()` names both). No figure in a block is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_JSON = Path("docs/bench/bench.json")
LOCAL_JSON = Path("docs/bench/bench-local.json")
LOADTEST_JSON = Path("docs/bench/loadtest.json")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def _row(label: str, figures: dict[str, Any] | None, high: str) -> str:
    figures = figures or {}
    return (
        f"| {label} | {_ms(figures.get('p50'))} | {_ms(figures.get(high))} "
        f"| {figures.get('errors', 0):.0f} |"
    )


def _load_text(load: dict[str, Any] | None) -> str:
    if not load:
        return "load average not recorded"
    before, after = load.get("before") or ["?"], load.get("after") or ["?"]
    return f"load average {before[0]} before, {after[0]} after"


def _pairs(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "n/a (the server reports none)"
    return ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in figures.items())


def render_bench(data: dict[str, Any]) -> list[str]:
    """The `make bench` table and its notes."""
    pipe, seq = data["pipelined"], data["sequential"]
    machine = data.get("machine", {})
    measured = pipe.get("measured", {})
    lines = [
        f"`make bench` ({data.get('code', '?')}, {data.get('date', '?')}; "
        f"{machine.get('cpus', '?')} cores, "
        f"{_load_text(machine.get('load_average'))}): one session, "
        f"{data.get('turns_per_session', '?')} turns of each kind, a {data['question_s']} s "
        f"question, the fakes' default latency profile; a failed or timed-out turn counts as "
        "30 s in every figure.",
        "",
        "| `make bench`, ms | p50 | p99 | errors |",
        "|---|---|---|---|",
        _row(
            "push-to-talk: `input_audio.stop` → first reply audio",
            pipe["client_voice_to_voice_ms"],
            "p99",
        ),
    ]
    hands_free = data.get("hands_free")
    if hands_free:
        window = hands_free["silence_window_ms"]
        lines += [
            _row(
                f"hands-free: end of speech → first reply audio ({window} ms silence window)",
                hands_free["voice_to_voice_ms"],
                "p99",
            ),
            _row(
                "hands-free: the server's `voice_to_voice_ms` (from its detector's stop)",
                hands_free["server_voice_to_voice_ms"],
                "p99",
            ),
        ]
    lines.append(_row("sequential design: stop → first speech bytes", seq["first_audio_ms"], "p99"))
    for row in data.get("compatible") or []:
        lines.append(
            _row(f"{row['name']}, default settings: push-to-talk", row["voice_to_voice_ms"], "p99")
        )
    lines.append(
        _row("server overhead: voice-to-voice minus the profile's path", pipe["overhead_ms"], "p99")
    )
    if measured.get("turns"):
        lines.append(
            _row(
                "server overhead: minus the providers' path as the fakes timed it",
                measured["overhead_ms"],
                "p99",
            )
        )
    lines += [
        _row(
            "the plain-SDK client's own overhead (sequential, against the profile)",
            seq["overhead_first_audio_ms"],
            "p99",
        ),
        "",
        f"Push-to-talk p50 / sequential p50: "
        f"{data['ratio_p50']['vs_sequential_first_audio']}. Server overhead p50 / the plain-SDK "
        f"client's own overhead p50 in the same run (both against the latency profile): "
        f"{pipe.get('overhead_ratio_to_plain_client_p50', 'n/a')}.",
    ]
    for row in data.get("compatible") or []:
        lines.append(
            f"{row['name']}: p50 / sequential p50 {row['ratio_p50_vs_sequential']}; live "
            f"transcription connections {row['live_transcription_connections']}, Realtime "
            f"handshakes refused {row['realtime_handshakes_refused']}."
        )
    speculative = data.get("speculative_per_turn") or {}
    for mode in ("push_to_talk", "hands_free"):
        if mode in speculative:
            label = mode.replace("_", "-")
            lines.append(f"Speculative work per {label} turn: {_pairs(speculative[mode])}.")
    if hands_free:
        target = hands_free["target"]
        lines.append(
            f"Hands-free target (p50 at most {target['rule']}): {_ms(target['p50_at_most_ms'])} "
            f"ms, {'met' if target['met'] else 'not met'}."
        )
    return lines


def render_local(data: dict[str, Any]) -> list[str]:
    """The `make bench-local` table."""
    runs = data.get("models") or [data]
    lines = [
        f"`make bench-local` ({data.get('code', '?')}, {data.get('date', '?')}; "
        f"{_load_text(data.get('load_average'))}): the embedded engines, questions of "
        f"{runs[0]['question_s']} s (silence, then Piper's speech and the stop); a failed or "
        "timed-out turn counts as 30 s.",
        "",
        "| `make bench-local`, ms | p50 | p95 | errors |",
        "|---|---|---|---|",
    ]
    for run in runs:
        model = run.get("llm_model", "default")
        label = f"{model}: push-to-talk, end of speech → first reply audio"
        lines.append(_row(label, run["client_voice_to_voice_ms"], "p95"))
        if run.get("hands_free"):
            window = run["hands_free"]["silence_window_ms"]
            lines.append(
                _row(
                    f"{model}: hands-free, end of speech → first reply audio "
                    f"({window} ms silence window)",
                    run["hands_free"]["voice_to_voice_ms"],
                    "p95",
                )
            )
    return lines


def render(root: Path) -> str:
    """The README's block: each bench's table from its committed JSON."""
    parts = []
    for path, draw, command in (
        (BENCH_JSON, render_bench, "make bench ARGS=--readme"),
        (LOCAL_JSON, render_local, "make bench-local ARGS=--readme"),
    ):
        data = _load(root / path)
        if data is None:
            parts.append(f"No run committed in `{path}` yet: `{command}`, then `make docs`.")
        else:
            parts.append("\n".join([*draw(data), "", f"(From `{path}`.)"]))
    return "\n\n".join(parts) + "\n"


def _q(figures: dict[str, Any] | None, *names: str) -> str:
    figures = figures or {}
    return " / ".join(_ms(figures.get(name)) for name in names)


def _shares(busy: dict[str, float], names: tuple[str, ...]) -> str:
    return " / ".join(f"{busy[name]:.2f}" if name in busy else "-" for name in names)


def _split(counts: list[Any]) -> str:
    return " + ".join("?" if count is None else str(count) for count in counts)


def _part(step: dict[str, Any]) -> str:
    name = step.get("biggest_part")
    if not name:
        return "-"
    p99 = (step.get("overhead_parts_ms") or {}).get(name, {}).get("p99")
    return f"{name.replace('_', ' ')} ({_ms(p99)})"


def render_loadtest(data: dict[str, Any]) -> list[str]:
    """The `make loadtest` tables: the fakes' ramp, then the embedded engines' if it ran."""
    fakes, machine = data["fakes"], data.get("machine", {})
    critical = sum(fakes["critical_path_ms"].values())
    pause = data.get("pause_s") or ["?", "?"]
    lines = [
        f"`make loadtest` ({data.get('code', '?')}, {data.get('date', '?')}; "
        f"{machine.get('cpus', '?')} cores shared by everything below, "
        f"{_load_text(machine.get('load_average'))}): Debian's HAProxy with deploy/haproxy.cfg "
        "in front of two `voice-fsm serve` processes; fake providers with the original design's "
        f"latency profile ({fakes['providers']}); each session a user talking push-to-talk in "
        f"real time: a {data['question_s']} s question in {data['frame_ms']} ms frames, the "
        f"reply read but not played, a {pause[0]}-{pause[1]} s pause, again. Server overhead: "
        "the server's own voice-to-voice (its `turn.completed` lines) beyond the profile's "
        f"{critical:.0f} ms critical path{_preemptive(fakes)}, as `make bench` counts it; CPU "
        "and memory from /proc, the memory as the serve processes' RSS growth over idle, per "
        f"session.{_retried(data)}",
        "",
        "| sessions | per process | turns | errors | server overhead p50 / p99, ms "
        "| biggest part of it (p99, ms) | server CPU per turn, ms | memory per session, KiB "
        "| cores busy: servers / HAProxy / fakes / clients | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in fakes["steps"]:
        errors = step["errors"] + step.get("server_failed_turns", 0)
        again = " (again)" if step.get("attempt", 1) > 1 else ""
        lines.append(
            f"| {step['sessions']}{again} | {_split(step['sessions_per_process'])} "
            f"| {step['turns']} | {errors} | {_q(step['overhead_ms'], 'p50', 'p99')} "
            f"| {_part(step)} "
            f"| {_num(step.get('cpu_per_turn_ms'))} | {_ms(step.get('memory_per_session_kib'))} "
            f"| {_shares(step['cores_busy'], ('servers', 'haproxy', 'fakes', 'clients'))} "
            f"| {step['load_average'][0]} |"
        )
    lines += ["", _capacity_text(fakes)]
    engines = data.get("engines")
    if engines:
        lines += ["", *_render_engines(engines)]
    return lines


def _retried(data: dict[str, Any]) -> str:
    retries = (data.get("arguments") or {}).get("retries")
    if not retries:
        return ""
    return (
        " A hold over the limit without an error is measured once more straight away (the "
        "machine is shared: a neighbour's burst can spoil one); each hold is a row."
    )


def _preemptive(fakes: dict[str, Any]) -> str:
    stt = fakes["critical_path_ms"].get("stt")
    if "Realtime" not in fakes["providers"] or not stt:
        return ""
    return (
        f" (less the transcription's {stt:.0f} ms when a reply begun on the live transcript "
        "was kept)"
    )


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sessions(count: int) -> str:
    return f"{count} session{'' if count == 1 else 's'}"


def _capacity_text(fakes: dict[str, Any]) -> str:
    cap = fakes.get("capacity")
    if cap is None:
        return f"No step stayed within the limit; the ramp stopped: {fakes['stopped']}."
    best = [step for step in fakes["steps"] if step["within_limit"]][-1]
    servers = best["cores_busy"].get("servers")
    own = f", {cap['sessions'] / servers:.0f} per core of the servers' own CPU" if servers else ""
    return (
        f"Within server overhead p99 {cap['limit_ms']:g} ms and no error: "
        f"{_sessions(cap['sessions'])}, {cap['per_process']:g} per process, "
        f"{cap['per_core']:g} per core of this machine (shared with the load){own}, at "
        f"{_num(cap['cpu_per_turn_ms'])} ms of server CPU per turn and "
        f"{_ms(cap['memory_per_session_kib'])} KiB per session. The ramp stopped: "
        f"{fakes['stopped']}."
    )


def _render_engines(engines: dict[str, Any]) -> list[str]:
    lines = [
        "The same two processes with the embedded engines behind one `voice-fsm engines` "
        "(their OpenAI-compatible provider; Piper's questions taking turns), sessions growing "
        f"until voice-to-voice p95 passes {engines['bound_ms']:.0f} ms: the engines, which run "
        "one inference at a time each, are the limit here, as their queue wait shows.",
        "",
        "| sessions | per process | turns | errors | voice-to-voice p50 / p95, ms "
        "| engines' queue wait, mean by engine, ms | engines CPU per turn, ms "
        "| server CPU per turn, ms | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for step in engines["steps"]:
        waits = step.get("queue_wait_mean_ms") or {}
        shown = ", ".join(f"{lane} {_ms(wait)}" for lane, wait in waits.items()) or "-"
        errors = step["errors"] + step.get("server_failed_turns", 0)
        lines.append(
            f"| {step['sessions']} | {_split(step['sessions_per_process'])} | {step['turns']} "
            f"| {errors} | {_q(step['server_voice_to_voice_ms'], 'p50', 'p95')} | {shown} "
            f"| {_ms(step.get('engines_cpu_per_turn_ms'))} "
            f"| {_num(step.get('server_cpu_per_turn_ms'))} | {step['load_average'][0]} |"
        )
    cap = engines.get("capacity")
    held = "no step"
    if cap is not None:
        held = f"{_sessions(cap['sessions'])} ({cap['per_core']:g} per core)"
    lines += ["", f"Within the bound: {held}. The ramp stopped: {engines['stopped']}."]
    return lines


def render_capacity(root: Path) -> str:
    """The README's capacity block, from the committed `make loadtest` run."""
    data = _load(root / LOADTEST_JSON)
    if data is None:
        return (
            f"No run committed in `{LOADTEST_JSON}` yet: `make loadtest ARGS=--readme`, "
            "then `make docs`.\n"
        )
    return "\n".join([*render_loadtest(data), "", f"(From `{LOADTEST_JSON}`.)"]) + "\n"


def blocks(root: Path) -> dict[str, str]:
    """Each README block this module draws, by its marker name."""
    return {"bench": render(root), "capacity": render_capacity(root)}
