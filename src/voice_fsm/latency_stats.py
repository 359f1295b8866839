"""Percentiles and counts over finished turns, one definition for every place that shows them
(the dashboard page and `voice-fsm latency`), so their figures agree to the millisecond."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STAGE_FIELDS = (
    "voice_to_voice_ms",
    "stt_ms",
    "llm_first_token_ms",
    "llm_ms",
    "tts_first_audio_ms",
    "tts_ms",
)
"""What is summarised per turn, as the `turn.completed` line names it (milliseconds)."""
PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (one of the values, never an interpolation): None for no
    values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(turns: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`turns` are `turn.completed` lines (or `TurnRecord.log_fields()` with `turn`): the
    count, the outcomes, the error codes, and p50/p95/p99 of each of `STAGE_FIELDS` over the
    turns that have it."""
    rows = list(turns)
    outcomes = Counter(str(row.get("outcome")) for row in rows)
    codes = Counter(str(row["code"]) for row in rows if row.get("code"))
    stages: dict[str, dict[str, float | int | None]] = {}
    for name in STAGE_FIELDS:
        values = [
            float(row[name])
            for row in rows
            if isinstance(row.get(name), int | float) and not isinstance(row.get(name), bool)
        ]
        summary: dict[str, float | int | None] = {"count": len(values)}
        for p in PERCENTILES:
            summary[f"p{p}"] = percentile(values, p)
        stages[name] = summary
    return {
        "turns": len(rows),
        "outcomes": dict(sorted(outcomes.items())),
        "error_codes": dict(sorted(codes.items())),
        "stages": stages,
    }
