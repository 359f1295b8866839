"""The README's benchmark figures, drawn from the runs committed under docs/bench/.

`make bench ARGS=--readme` writes docs/bench/bench.json and `make bench-local ARGS=--readme`
docs/bench/bench-local.json; `make docs` (voice_fsm.docs_gen) puts `render()` between the
README's ``<!-- bench:begin -->`` and ``<!-- bench:end -->``, and tests/test_docs.py fails when
that block is not what the committed JSON gives. No figure in the block is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_JSON = Path("docs/bench/bench.json")
LOCAL_JSON = Path("docs/bench/bench-local.json")


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
