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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

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


# ---------------------------------------------------------------- charts (--png)

STAGE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:pink", "tab:olive", "tab:brown")


def check_charts() -> None:
    """Raises ReportError when matplotlib (the `bench` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(f"--png needs matplotlib: {PNG_HINT}") from None


def draw_charts(turns: Iterable[Mapping[str, Any]], path: Path) -> None:
    """The dashboard page's charts, as one PNG: voice-to-voice over time (each turn, rolling
    p50 and p95), each stage's rolling p50 (solid) and p95 (dashed) over time, the outcomes and
    the error codes. The rolling figures are the page's own (`turn_history.rolling_percentiles`).
    Time is the lines' timestamps (UTC), or the turns' order where a line has none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from voice_fsm.turn_history import ROLLING_WINDOW, rolling_percentiles

    rows = [dict(row) for row in turns]
    timed = bool(rows) and all(row["ended_at"] is not None for row in rows)
    if timed:
        rows.sort(key=lambda row: row["ended_at"])
    else:  # the turns' order is their time
        rows = [row | {"ended_at": index + 1} for index, row in enumerate(rows)]
    series = rolling_percentiles(rows)

    def x_of(point: Mapping[str, Any]) -> Any:
        return datetime.fromtimestamp(point["t"], UTC) if timed else point["t"]

    fig, ((v2v, stages), (outcomes, codes)) = plt.subplots(2, 2, figsize=(15, 9))
    for axes, names in ((v2v, STAGE_FIELDS[:1]), (stages, STAGE_FIELDS[1:])):
        for name in names:
            points = series[name]
            xs = [x_of(point) for point in points]
            values = [point["value"] for point in points]
            p50s = [point["p50"] for point in points]
            p95s = [point["p95"] for point in points]
            color = STAGE_COLORS[STAGE_FIELDS.index(name)]
            marker = "." if len(xs) <= 60 else None  # a lone turn is still seen
            if axes is v2v:
                axes.scatter(xs, values, s=10, color="gray", alpha=0.6, label="each turn")
                axes.plot(xs, p50s, color=color, marker=marker, label="p50")
                axes.plot(xs, p95s, color="tab:red", marker=marker, label="p95")
            else:
                label = name.removesuffix("_ms")
                axes.plot(xs, p50s, color=color, marker=marker, label=f"{label} p50")
                axes.plot(xs, p95s, color=color, linestyle="--", linewidth=1)
        axes.set_ylabel("ms")
        axes.set_ylim(bottom=0)
        if timed:
            locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
            axes.xaxis.set_major_locator(locator)
            concise = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
            axes.xaxis.set_major_formatter(concise)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("time (UTC)" if timed else "turn")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    v2v.set_title(f"voice-to-voice (rolling p50/p95 over {ROLLING_WINDOW} turns)")
    stages.set_title("per stage: p50 (solid), p95 (dashed)")
    summary = summarize(rows)
    for axes, counts, title in (
        (outcomes, summary["outcomes"], "outcomes"),
        (codes, summary["error_codes"], "error codes"),
    ):
        labels = list(counts)
        colors = ["tab:green" if label == "ok" else "tab:red" for label in labels]
        bars = axes.barh(labels, [counts[label] for label in labels], color=colors)
        axes.bar_label(bars, padding=3)
        axes.set_title(title)
        axes.set_xlabel("turns")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.invert_yaxis()
        if not labels:
            axes.text(0.5, 0.5, "none", ha="center", va="center", transform=axes.transAxes)
    fig.suptitle(f"{summary['turns']} turns from the turn.completed log lines")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
