"""`voice-fsm latency`: p50/p95/p99 per stage and outcome counts from `turn.completed` log lines.

A log file holds other lines too (other events, uvicorn's plain text, a line cut short by a
crash): every non-blank line that is not a usable `turn.completed` object is skipped and
counted by reason, never an error. The figures come from `latency_stats.summarize`, as on the
dashboard page, so both agree over the same turns.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from voice_fsm.latency_charts import STAGE_COLORS, draw_charts
from voice_fsm.latency_stats import STAGE_FIELDS, summarize

EVENT = "turn.completed"
GROUPINGS = ("hour", "provider", "mode")
UNKNOWN = "unknown"
"""The group of a turn whose line lacks the grouped-by field."""
SKIP_REASONS = {
    "not_json": "not JSON",
    "not_object": "not a JSON object",
    "other_event": "other events",
    "bad_fields": f"{EVENT} with bad fields",
}
PNG_HINT = "pip install 'voice-fsm[bench]' (or `make bench`, which installs it)"
NUMBER_FIELDS = ("audio_in_ms", *STAGE_FIELDS)
TEXT_FIELDS = ("mode", "code", "stage")

__all__ = [
    "STAGE_COLORS",
    "LogTurns",
    "ReportError",
    "build_report",
    "check_charts",
    "draw_charts",
    "group_key",
    "parse_line",
    "report_lines",
    "run",
    "summary_lines",
]


class ReportError(Exception):
    """A usage or file problem: one line for stderr (exit code 2)."""


@dataclass
class LogTurns:
    """The turns read from the lines so far, and the lines skipped by reason."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, raw: bytes | str) -> None:
        if not raw.strip():
            return  # a blank line is no line
        turn, reason = parse_line(raw)
        if turn is not None:
            self.turns.append(turn)
        else:
            self.skipped[str(reason)] += 1

    def read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.add(raw)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_line(raw: bytes | str) -> tuple[dict[str, Any] | None, str | None]:
    """One log line -> (the turn's fields, None), or (None, the reason it is skipped).

    A turn keeps what the report uses, named as the dashboard's `TurnHistory` names it:
    outcome, mode, code, stage, providers, the timings (ms or None) and `ended_at` (the line's
    `timestamp` as unix seconds, or None). A field that is present
    but of the wrong kind (a string for a timing, a timestamp that is not ISO 8601) makes the
    whole line `bad_fields`: a figure from half a line would be a wrong figure."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return None, "not_json"
    if not isinstance(line, dict):
        return None, "not_object"
    if line.get("event") != EVENT:
        return None, "other_event"
    turn: dict[str, Any] = {"outcome": line.get("outcome")}
    if not isinstance(turn["outcome"], str):
        return None, "bad_fields"
    for name in NUMBER_FIELDS:
        value = line.get(name)
        if value is not None and not (_is_number(value) and value >= 0):
            return None, "bad_fields"
        turn[name] = value
    for name in TEXT_FIELDS:
        value = line.get(name)
        if value is not None and not isinstance(value, str):
            return None, "bad_fields"
        turn[name] = value
    providers = line.get("providers")
    if providers is not None and not (
        isinstance(providers, dict) and all(isinstance(v, str) for v in providers.values())
    ):
        return None, "bad_fields"
    turn["providers"] = providers
    stamp = line.get("timestamp")
    turn["ended_at"] = None
    if stamp is not None:
        try:
            moment = datetime.fromisoformat(stamp)
        except (TypeError, ValueError):
            return None, "bad_fields"
        if moment.tzinfo is None:  # structlog writes UTC; a naive stamp is taken as UTC
            moment = moment.replace(tzinfo=UTC)
        turn["ended_at"] = moment.timestamp()
    return turn, None


def group_key(turn: Mapping[str, Any], by: str) -> str:
    """hour: `2026-11-30T11:00Z` (UTC); provider: `stt/llm/tts`; mode: as logged."""
    if by == "hour":
        if turn["ended_at"] is None:
            return UNKNOWN
        return datetime.fromtimestamp(turn["ended_at"], UTC).strftime("%Y-%m-%dT%H:00Z")
    if by == "provider":
        providers = turn["providers"]
        if not providers:
            return UNKNOWN
        return "/".join(str(providers.get(stage, "?")) for stage in ("stt", "llm", "tts"))
    if by == "mode":
        return str(turn["mode"] or UNKNOWN)
    raise ValueError(f"cannot group by {by!r}: one of {', '.join(GROUPINGS)}")


def build_report(
    log: LogTurns, *, by: str | None = None, sources: Sequence[str] = ()
) -> dict[str, Any]:
    """The whole report as one JSON-able object (what `--json` prints)."""
    report: dict[str, Any] = {
        "sources": list(sources),
        "summary": summarize(log.turns),
        "skipped": {"total": sum(log.skipped.values())}
        | {reason: log.skipped[reason] for reason in SKIP_REASONS},
        "by": by,
    }
    if by is not None:
        groups: dict[str, list[dict[str, Any]]] = {}
        for turn in log.turns:
            groups.setdefault(group_key(turn, by), []).append(turn)
        ordered = sorted(groups, key=lambda key: (key == UNKNOWN, key))
        report["groups"] = {key: summarize(groups[key]) for key in ordered}
    return report


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def summary_lines(summary: Mapping[str, Any]) -> Iterator[str]:
    width = max(len(name) for name in STAGE_FIELDS)
    yield f"{'':{width}}  {'count':>6} {'p50':>7} {'p95':>7} {'p99':>7}  (ms)"
    for name in STAGE_FIELDS:
        stage = summary["stages"][name]
        figures = " ".join(f"{_ms(stage[p]):>7}" for p in ("p50", "p95", "p99"))
        yield f"{name:{width}}  {stage['count']:>6} {figures}"
    yield f"outcomes: {_counts(summary['outcomes'])}"
    yield f"error codes: {_counts(summary['error_codes'])}"


def report_lines(report: Mapping[str, Any]) -> Iterator[str]:
    """The report as text, for a person."""
    sources = report["sources"]
    where = sources[0] if len(sources) == 1 else f"{len(sources)} files"
    skipped = report["skipped"]
    reasons = [
        f"{skipped[reason]} {label}" for reason, label in SKIP_REASONS.items() if skipped[reason]
    ]
    line = f"{report['summary']['turns']} turns from {where}; {skipped['total']} lines skipped"
    yield line + (f" ({', '.join(reasons)})" if reasons else "")
    yield ""
    yield from summary_lines(report["summary"])
    for key, summary in report.get("groups", {}).items():
        yield ""
        yield f"== {report['by']} {key}: {summary['turns']} turns =="
        yield from summary_lines(summary)


def run(
    files: Sequence[str],
    *,
    by: str | None = None,
    as_json: bool = False,
    png: str | None = None,
    stdin: IO[bytes] | None = None,
    out: IO[str] | None = None,
) -> int:
    """The command: read, summarise, print, draw. Raises ReportError for a usage or file
    problem (before anything is printed)."""
    out = out if out is not None else sys.stdout
    if png is not None:
        check_charts()
    names = list(files) or ["-"]
    for name in names:
        if name != "-" and not Path(name).is_file():
            why = "is a directory" if Path(name).is_dir() else "no such file"
            raise ReportError(f"{name}: {why}")
    log = LogTurns()
    for name in names:
        if name == "-":
            log.read(stdin if stdin is not None else sys.stdin.buffer)
            continue
        try:
            with open(name, "rb") as stream:
                log.read(stream)
        except OSError as err:
            raise ReportError(f"cannot read {name}: {err.strerror or err}") from err
    report = build_report(log, by=by, sources=["stdin" if n == "-" else n for n in names])
    if png is not None:
        try:
            draw_charts(log.turns, Path(png))
        except OSError as err:
            raise ReportError(f"cannot write {png}: {err.strerror or err}") from err
        report["png"] = png
    if as_json:
        print(json.dumps(report, ensure_ascii=False), file=out)
    else:
        for text in report_lines(report):
            print(text, file=out)
        if png is not None:
            print(f"\ncharts: {png}", file=out)
    return 0


def check_charts() -> None:
    """Raises ReportError when matplotlib (the `bench` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(f"--png needs matplotlib: {PNG_HINT}") from None
