"""The last finished turns of this process, for the dashboard page (`/dashboard`).

`TurnHistory` is a turn observer: it keeps the last N records (`VOICE_FSM_DASHBOARD__TURNS`)
as the `turn.completed` line's fields, and gives a snapshot of them with the same
`latency_stats.summarize` that `voice-fsm latency` applies to log files, so the page's figures
and the command's agree exactly over the same turns.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from voice_fsm.latency_stats import STAGE_FIELDS, percentile, summarize
from voice_fsm.machine import HasState, count_states
from voice_fsm.turn_record import TurnRecord

SHOWN_TURNS = 200
"""Turns the snapshot lists (the page's charts and table); the summary covers all kept."""
ROLLING_WINDOW = 20
"""The charts' p50 and p95 at a turn are over that turn and the ones before it, this many."""


class TurnHistory:
    """A bounded ring of finished turns (oldest first), as plain dicts."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a turn history keeps at least one turn, not {size}")
        self.size = size
        self.turns: deque[dict[str, Any]] = deque(maxlen=size)
        self.finished = 0
        """Turns seen since the start, kept or not."""
        self._summary: tuple[int, dict[str, Any]] | None = None

    def turn_ended(self, record: TurnRecord) -> None:
        self.turns.append(
            {
                "session_id": record.session_id,
                "turn": record.turn,
                **record.log_fields(),
                "ended_at": record.ended_at,
            }
        )
        self.finished += 1

    def summary(self) -> dict[str, Any]:
        """`summarize` over every kept turn, computed again only once a turn has ended."""
        if self._summary is None or self._summary[0] != self.finished:
            self._summary = (self.finished, summarize(self.turns))
        return self._summary[1]

    def snapshot(
        self, sessions: Iterable[HasState] = (), shown: int = SHOWN_TURNS
    ) -> dict[str, Any]:
        """What the dashboard shows: the last `shown` turns (oldest first), the summary of all
        kept turns, the rolling p50/p95 per stage over the shown turns, and the live sessions
        by state."""
        kept = list(self.turns)
        recent = kept[-shown:] if shown > 0 else []
        states = count_states(sessions)
        return {
            "generated_at": time.time(),
            "kept": len(kept),
            "capacity": self.size,
            "finished": self.finished,
            "summary": self.summary(),
            "turns": recent,
            "series": rolling_percentiles(recent),
            "sessions": {"live": sum(states.values()), "by_state": states},
        }


def rolling_percentiles(
    turns: list[dict[str, Any]], window: int = ROLLING_WINDOW
) -> dict[str, list[dict[str, Any]]]:
    """Per stage field, one point per turn that has it: its end, its value, and the p50 and
    p95 over it and the `window - 1` turns with the field before it."""
    series: dict[str, list[dict[str, Any]]] = {}
    for name in STAGE_FIELDS:
        points: list[dict[str, Any]] = []
        values: list[float] = []
        for row in turns:
            value = row.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            values.append(float(value))
            last = values[-window:]
            points.append(
                {
                    "t": row.get("ended_at"),
                    "value": float(value),
                    "p50": percentile(last, 50),
                    "p95": percentile(last, 95),
                }
            )
        series[name] = points
    return series
