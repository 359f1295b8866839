"""The load test's arithmetic: a step's turns read from the servers' ``turn.completed`` lines,
their overhead beyond the providers' profile (as `make bench` defines it) and where it went,
and the processes' CPU and memory from /proc.

Server overhead of a turn = the server's own ``voice_to_voice_ms`` (from ``input_audio.stop``
received to the first reply audio sent) minus the providers' critical path in the latency
profile (`pipelined_stages`; without the transcription when a reply started on the live
transcript was adopted, since the transcription is then off the path). Its parts: each stage's
time beyond the profile (transcription, the language model's first token, the speech's first
audio) and the rest ("between stages": the server's own hops, and the tokens up to the first
speakable piece arriving late).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import cpu_seconds, percentile

from voice_fsm.testing.latency_profile import REPLY, LatencyProfile, pipelined_stages

PARTS = ("stt", "llm_first_token", "tts_first_audio", "between_stages")


def quantiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max (nearest rank), empty without values."""
    if not values:
        return {}
    out = {f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)}
    out["max"] = round(max(values), 1)
    return out


@dataclass
class LogTail:
    """A server's JSON log read from where the last read stopped (whole lines only)."""

    path: Path
    offset: int = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


@dataclass
class ServerTurns:
    """What the servers logged over a step."""

    overhead_ms: list[float] = field(default_factory=list)
    parts_ms: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    voice_to_voice_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    """Warnings and errors the servers logged, by level and event."""
    preemptive: int = 0

    @property
    def turns(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.turns - self.outcomes["ok"]


def read_turns(
    records: list[dict[str, Any]], profile: LatencyProfile | None, *, live: bool
) -> ServerTurns:
    """The step's turns from `records` (log lines); overhead only against a `profile`."""
    out = ServerTurns()
    for record in records:
        level = record.get("level")
        if level in ("warning", "error", "critical"):
            out.problems[f"{level} {record.get('event')}"] += 1
        if record.get("event") != "turn.completed":
            continue
        out.outcomes[str(record.get("outcome"))] += 1
        v2v = record.get("voice_to_voice_ms")
        if record.get("outcome") != "ok" or v2v is None:
            continue
        out.voice_to_voice_ms.append(float(v2v))
        if profile is None:
            continue
        adopted = (record.get("speculative_replies") or 0) - (record.get("wasted_replies") or 0)
        preemptive = live and adopted > 0
        out.preemptive += preemptive
        audio_s = float(record.get("audio_in_ms") or 0) / 1000
        expected = pipelined_stages(profile, audio_s, REPLY, live=live)
        if preemptive:
            expected["stt"] = 0.0
        overhead = float(v2v) - sum(expected.values()) * 1000
        parts = {
            "stt": 0.0 if preemptive else _ms(record, "stt_ms") - expected["stt"] * 1000,
            "llm_first_token": _ms(record, "llm_first_token_ms") - profile.llm_first_token_s * 1000,
            "tts_first_audio": _ms(record, "tts_first_audio_ms") - profile.tts_first_audio_s * 1000,
        }
        parts["between_stages"] = overhead - sum(parts.values())
        out.overhead_ms.append(overhead)
        for name, value in parts.items():
            out.parts_ms[name].append(value)
    return out


def _ms(record: dict[str, Any], name: str) -> float:
    value = record.get(name)
    return float(value) if isinstance(value, int | float) else 0.0


def biggest_part(parts: dict[str, dict[str, float]]) -> str | None:
    """The part of the overhead with the largest p99."""
    ranked = [(figures.get("p99", 0.0), name) for name, figures in parts.items() if figures]
    return max(ranked)[1] if ranked else None


def rss_mib(pid: int) -> float | None:
    """Resident memory of process `pid` (MiB), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_of(pids: list[int]) -> float:
    """The summed user and system CPU seconds of `pids` (those still running)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def system_cpu_of(pids: list[int]) -> float:
    """The system (kernel) part of `cpu_of`: on loopback, a socket write also pays for the
    receiving side's TCP processing, so this is mostly the sockets' cost."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[12]) / os.sysconf("SC_CLK_TCK")
    return total


def cores() -> int:
    return os.cpu_count() or 1
