"""`voice-fsm latency --png`: the dashboard page's charts drawn from the turns of log files,
with matplotlib (the `bench` extra), imported only when they are drawn."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_fsm.latency_stats import STAGE_FIELDS, summarize

STAGE_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:pink", "tab:olive", "tab:brown")


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
