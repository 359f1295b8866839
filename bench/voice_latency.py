"""Voice-to-voice latency of the server against OpenAI-like providers, against the sequential
design, with one session or many.

Starts fake OpenAI-compatible providers (the HTTP API and the Realtime WebSocket on one port,
in a process of their own) whose latencies follow a `LatencyProfile`, and `voice-fsm serve`
pointed at them as at OpenAI's API: transcribing live and speaking through Realtime sessions
(each new one takes the profile's `realtime_connect_s` to open). Each of `--sessions`
clients, started a little apart, speaks `--turns` questions at the pace of speech
(push-to-talk) and, after each one, runs the same turn the sequential way straight against
the same fakes with the openai SDK: upload the completed recording, wait for the whole reply,
then ask for its speech. Voice-to-voice is the time from the end of the user's audio to the
first reply audio at the client. Reports p50, p95 and p99 of both designs and the server's
overhead beyond the providers' critical path (also as a ratio to the plain-SDK sequential
client's own overhead in the same run, which the machine's noise mostly cancels), and writes
artifacts/bench-<sessions>.json and .png (with --readme also docs/bench/bench.json, which
`make docs` puts into the README).

Hands-free rows: after each of those turns, a new session in hands-free mode hears real
speech (Piper) followed by silence the bench adds itself, streamed at the pace of speech
without a stop, and is timed from the END OF SPEECH to the first reply audio (the server's
detector ends the turn after a silence window of 500 ms). Then two rows of push-to-talk turns
against a compatible server with the server's default settings: one whose fakes have the
Realtime endpoint, one without it (its handshakes refused with 404).

Failed and timed-out turns count in every percentile as the timeout (30 s), and every figure
is printed with its error count.

    make bench                          # or: .venv/bin/python bench/voice_latency.py
    make bench ARGS="--sessions 50"
    make bench ARGS="--tts speech --profile realtime_connect_s=0.3"
    make bench ARGS="--against HEAD~5 --turns 5"   # this tree against a commit, in one run
    make bench ARGS="--speech-to-speech"           # the cascade against speech-to-speech mode
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openai
from common import (
    REPO,
    TURN_TIMEOUT_S,
    base_env,
    cpu_seconds,
    current_tree,
    free_port,
    git_worktree,
    load_average,
    machine,
    percentile,
    scrape_counters,
    spread,
    start_server,
    stop_server,
    voice_fsm_source,
)
from hands_free_client import HandsFreeTurn, hands_free_turn, trim_speech

from voice_fsm.audio import SAMPLE_RATE, pcm_to_wav
from voice_fsm.settings import DEFAULT_INSTRUCTIONS, LlmSettings, SttSettings, TtsSettings
from voice_fsm.talk import TalkError, TalkResult, talk
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, create_fake_openai_app
from voice_fsm.testing.latency_profile import (
    DEFAULT_PROFILE,
    LatencyProfile,
    fake_openai_config,
    fake_realtime_config,
    first_piece,
    pipelined_stages,
    sequential_s,
    sequential_stages,
)
from voice_fsm.testing.speech import spoken, voiced
from voice_fsm.testing.threaded_server import serving_in_thread

if TYPE_CHECKING:
    from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

SERVER_KEY = "sk-bench-server-0000"
SEQUENTIAL_KEY = "sk-bench-sequential-0000"  # the fakes count each side's requests by key
STAGE_EXCESS = ("stt", "llm_first_token", "tts_first_audio", "transport", "other")
QUANTILES = (50, 95, 99)
HANDS_FREE_QUESTION = "What is the capital of France?"
SILENCE_WINDOW_MS = 500
"""The hands-free detector's silence window (VOICE_FSM_VAD__MIN_SILENCE_MS) in the bench."""
README_JSON = REPO / "docs" / "bench" / "bench.json"


def server_env(base_url: str, *, realtime: bool, tts: str) -> dict[str, str]:
    """Everything the server is told, in one place: every stage on the fakes. With the
    Realtime fake, speech-to-text transcribes live (as it does on OpenAI's own API)."""
    return base_env(
        OPENAI_API_KEY=SERVER_KEY,
        OPENAI_BASE_URL=base_url,  # the HTTP API and the Realtime WebSocket, one port
        VOICE_FSM_STT__PROVIDER="openai",
        VOICE_FSM_STT__LIVE="true" if realtime else "false",
        VOICE_FSM_LLM__PROVIDER="openai",
        VOICE_FSM_TTS__PROVIDER="openai-realtime" if tts == "realtime" else "openai",
        VOICE_FSM_VAD__MIN_SILENCE_MS=str(SILENCE_WINDOW_MS),
        VOICE_FSM_LOG__FORMAT="json",
        # Every simulated user comes from 127.0.0.1: the per-address cap must not apply.
        VOICE_FSM_LIMITS__MAX_SESSIONS_PER_CLIENT="100000",
    )


def compatible_env(base_url: str) -> dict[str, str]:
    """A compatible server at a base URL with the server's defaults: live transcription
    whatever the default decides, speech through the Speech API (HTTP)."""
    return base_env(
        OPENAI_API_KEY=SERVER_KEY,
        OPENAI_BASE_URL=base_url,
        VOICE_FSM_STT__PROVIDER="openai",
        VOICE_FSM_LLM__PROVIDER="openai",
        VOICE_FSM_TTS__PROVIDER="openai",
        VOICE_FSM_LOG__FORMAT="json",
        VOICE_FSM_LIMITS__MAX_SESSIONS_PER_CLIENT="100000",
    )


# ---------------------------------------------------------------- the fake providers


def _serve_fakes(profile: LatencyProfile, conn: Connection, with_realtime: bool = True) -> None:
    """The fakes' process: serve until told to stop, then report what they received. Without
    `with_realtime`, a compatible server that has no Realtime endpoint."""
    config = fake_openai_config(profile)
    realtime = fake_realtime_config(profile) if with_realtime else None
    app = create_fake_openai_app(config, realtime=realtime)
    with serving_in_thread(app, "fakes") as base_url:
        conn.send({"base_url": base_url, "realtime": realtime is not None})
        with contextlib.suppress(EOFError):  # EOF: the bench has gone
            conn.recv()  # stop
    keys = {SERVER_KEY: "server", SEQUENTIAL_KEY: "sequential"}
    counts: Counter[str] = Counter()
    for request in config.requests:
        counts[f"{keys.get(_bearer(request.headers), 'other')} {request.endpoint}"] += 1
    for connection in realtime.connections if realtime is not None else []:
        who = keys.get(_bearer(connection.headers), "other")
        kind = "transcription" if connection.query.get("intent") == "transcription" else "speech"
        counts[f"{who} realtime {kind}"] += 1
    conn.send({"counts": dict(counts), "times": provider_times(config, realtime)})


def _bearer(headers: dict[str, str]) -> str:
    return headers.get("authorization", "").removeprefix("Bearer ")


def provider_times(
    config: FakeOpenAIConfig, realtime: FakeRealtimeConfig | None
) -> dict[str, dict[str, Any]]:
    """What the fakes took for each of the server's requests, by the id the server's turn log
    names it by: when it arrived, and when each piece of the answer went out (for Realtime:
    the final transcript; the first audio). `time.monotonic()`: one clock for every process."""
    times: dict[str, dict[str, Any]] = {}
    for request in config.requests:
        if _bearer(request.headers) == SERVER_KEY:
            times[request.request_id] = {
                "endpoint": request.endpoint,
                "received_at": request.received_at,
                "sent_at": list(request.sent_at),
            }
    if realtime is None:
        return times
    ours = {c.index for c in realtime.connections if _bearer(c.headers) == SERVER_KEY}
    asked: dict[tuple[int, str], float] = {}  # the last commit / response.create per connection
    for event in list(realtime.events):
        if event.connection not in ours:
            continue
        if event.direction == "client":
            asked[event.connection, event.type] = event.at
            continue
        answer = event.event
        if event.type == "input_audio_buffer.committed":
            asked_at = asked.pop((event.connection, "input_audio_buffer.commit"), None)
            if asked_at is not None:
                times[answer["item_id"]] = {
                    "endpoint": "realtime transcription", "received_at": asked_at, "sent_at": []
                }  # fmt: skip
        elif event.type == "conversation.item.input_audio_transcription.completed":
            if answer["item_id"] in times:
                times[answer["item_id"]]["sent_at"].append(event.at)
        elif event.type == "response.created":
            asked_at = asked.pop((event.connection, "response.create"), None)
            if asked_at is not None:
                times[answer["response"]["id"]] = {
                    "endpoint": "realtime speech", "received_at": asked_at, "sent_at": []
                }  # fmt: skip
        elif event.type == "response.output_audio.delta":
            timed = times.get(answer["response_id"])
            if timed is not None and not timed["sent_at"]:
                timed["sent_at"].append(event.at)
    return times


@dataclass
class Fakes:
    base_url: str
    realtime: bool
    process: BaseProcess
    conn: Connection

    @classmethod
    def start(cls, profile: LatencyProfile, *, realtime: bool = True) -> Fakes:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve_fakes, args=(profile, theirs, realtime), daemon=True
        )
        process.start()
        deadline = time.monotonic() + 60
        while not ours.poll(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("the fake providers did not start")
        ready = ours.recv()
        return cls(ready["base_url"], ready["realtime"], process, ours)

    def stop(self) -> dict[str, Any]:
        """Stop the fakes; how many requests each side sent to each endpoint ("counts"), and
        what the server's requests took ("times", see `provider_times`)."""
        counts: dict[str, Any] = {}
        try:
            self.conn.send("stop")
            if self.conn.poll(30):
                counts = self.conn.recv()
        except (OSError, EOFError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        return counts


# ---------------------------------------------------------------- the turns


@dataclass
class SequentialTurn:
    """One turn the sequential way, in ms from the end of the user's audio."""

    transcribed_ms: float
    replied_ms: float
    first_audio_ms: float  # the speech's first bytes
    whole_file_ms: float  # the whole speech file
    reply: str


async def sequential_turn(client: openai.AsyncOpenAI, wav: bytes) -> SequentialTurn:
    """The seed's design: upload the completed recording, wait for the whole reply, then the
    speech. Timed from the moment the audio ended (this call)."""
    start = time.perf_counter()

    def ms() -> float:
        return (time.perf_counter() - start) * 1000

    transcription = await client.audio.transcriptions.create(
        model=SttSettings().model, file=("turn.wav", wav, "audio/wav")
    )
    transcribed = ms()
    completion = await client.chat.completions.create(
        model=LlmSettings().model,
        messages=[
            {"role": "system", "content": DEFAULT_INSTRUCTIONS},
            {"role": "user", "content": transcription.text},
        ],
    )
    replied = ms()
    reply = completion.choices[0].message.content or ""
    first_audio = None
    tts = TtsSettings()
    async with client.audio.speech.with_streaming_response.create(
        model=tts.model, voice=tts.voice, input=reply, response_format="pcm"
    ) as response:
        async for chunk in response.iter_bytes():
            if chunk and first_audio is None:
                first_audio = ms()
    whole = ms()
    return SequentialTurn(transcribed, replied, first_audio or whole, whole, reply)


@dataclass
class Results:
    pipelined: list[TalkResult] = field(default_factory=list)
    sequential: list[SequentialTurn] = field(default_factory=list)
    hands_free: list[HandsFreeTurn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    """Failed or timed-out turns by design: pipelined, sequential, hands-free."""
    loop_lag_ms: list[float] = field(default_factory=list)

    def fail(self, design: str, where: str, error: object) -> None:
        self.failed[design] += 1
        self.errors.append(f"{where}, {design}: {error}")


async def run_client(
    index: int,
    url: str,
    pcm: bytes,
    turns: int,
    delay: float,
    client: openai.AsyncOpenAI | None,
    results: Results,
    speech: bytes | None = None,
) -> None:
    """`turns` push-to-talk turns, each followed by the same turn the sequential way (with a
    `client`) and by a hands-free turn speaking `speech` (when given)."""
    await asyncio.sleep(delay)
    wav, audio_s = pcm_to_wav(pcm), len(pcm) / 2 / SAMPLE_RATE
    for turn in range(1, turns + 1):
        where = f"client {index} turn {turn}"
        try:
            result = await talk(url, pcm, realtime=True, time_limit=TURN_TIMEOUT_S)
            if result.ok and result.client_voice_to_voice_ms is not None:
                results.pipelined.append(result)
            else:
                results.fail("pipelined", where, result.error.code if result.error else "no audio")
        except TalkError as err:
            results.fail("pipelined", where, err)
        if client is not None:
            await asyncio.sleep(audio_s)  # the user says it again, for the sequential design
            try:
                async with asyncio.timeout(TURN_TIMEOUT_S):
                    results.sequential.append(await sequential_turn(client, wav))
            except (openai.OpenAIError, TimeoutError) as err:
                results.fail("sequential", where, str(err) or "timed out")
        if speech is not None:
            hands_free = await hands_free_turn(url, speech, time_limit=TURN_TIMEOUT_S)
            if hands_free.ok:
                results.hands_free.append(hands_free)
            else:
                results.fail("hands-free", where, hands_free.error)


async def watch_loop(results: Results, stop: asyncio.Event) -> None:
    """How late this process's event loop wakes up: the clients' own share of the figures."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        results.loop_lag_ms.append((time.perf_counter() - before - 0.01) * 1000)


async def run_bench(
    url: str,
    base_url: str,
    pcm: bytes,
    sessions: int,
    turns: int,
    stagger: float,
    *,
    speech: bytes | None = None,
    sequential: bool = True,
) -> Results:
    """`sessions` clients running `run_client`: push-to-talk, and the sequential design when
    `sequential`, and hands-free turns when `speech` is given."""
    results = Results()
    client = openai.AsyncOpenAI(
        api_key=SEQUENTIAL_KEY, base_url=base_url, max_retries=0, timeout=TURN_TIMEOUT_S
    )
    try:
        # Warm-up, not counted: the first connections, and the SDK's imports on both sides.
        warm = await talk(url, pcm, realtime=True)
        if not warm.ok:
            raise SystemExit(f"warm-up turn failed: {warm.error}")
        if sequential:
            await sequential_turn(client, pcm_to_wav(pcm))
        if speech is not None:
            warm_hands_free = await hands_free_turn(url, speech)
            if not warm_hands_free.ok:
                raise SystemExit(f"hands-free warm-up turn failed: {warm_hands_free.error}")
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_loop(results, stop))
        sdk = client if sequential else None
        clients = [
            run_client(i, url, pcm, turns, i * stagger, sdk, results, speech)
            for i in range(sessions)
        ]
        limit = sessions * stagger + turns * (3 * TURN_TIMEOUT_S + 30)  # beyond the timeouts
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*clients)
        except TimeoutError:
            raise SystemExit(f"the clients did not finish within {limit:g} s") from None
        finally:
            stop.set()
            await watcher
    finally:
        await client.close()
    return results


# ---------------------------------------------------------------- figures


@dataclass
class ServerLog:
    fallbacks: set[tuple[str, int]] = field(default_factory=set)
    """The turns that fell back from live transcription to the completed recording."""
    levels: Counter[str] = field(default_factory=Counter)
    """How many warnings and errors the server logged, by event."""
    requests: dict[tuple[str, int], list[dict[str, str]]] = field(default_factory=dict)
    """Each turn's provider requests, as its ``turn.completed`` line names them."""
    turns: Counter[str] = field(default_factory=Counter)
    """``turn.completed`` lines by mode."""
    fallback_events: Counter[str] = field(default_factory=Counter)
    """Log lines whose event names a fallback, by event."""
    speculative: dict[str, Counter[str]] = field(default_factory=dict)
    """By mode: the sums of the lines' speculative-work fields (any numeric field whose name
    says speculative or wasted, one level of nesting too)."""

    def per_turn(self, mode: str) -> dict[str, float] | None:
        """The speculative-work fields of `mode`'s turns, per turn; None if the log has none."""
        sums = self.speculative.get(mode)
        if not sums or not self.turns[mode]:
            return None
        return {name: round(total / self.turns[mode], 3) for name, total in sorted(sums.items())}


SPECULATIVE = re.compile("speculat|wasted")


def speculative_fields(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a log line (and of its dicts) whose name says speculative or
    wasted, by their dotted name."""
    found: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            for inner, number in speculative_fields(value, f"{name}.").items():
                found[inner] = number
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and SPECULATIVE.search(name)
        ):
            found[name] = float(value)
    return found


def print_log_errors(path: Path, limit: int = 5) -> None:
    """The server log's first error lines: what to read when a warm-up turn failed."""
    shown = 0
    for line in path.read_text(errors="replace").splitlines():
        if '"level": "error"' in line or '"level": "critical"' in line:
            print(f"server log: {line[:2000]}")
            shown += 1
            if shown >= limit:
                return


def server_log_facts(path: Path) -> ServerLog:
    facts = ServerLog()
    fallbacks, levels = facts.fallbacks, facts.levels
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            levels["unparsed"] += 1
            continue
        if not isinstance(record, dict):
            continue
        if record.get("level") in ("warning", "error", "critical"):
            levels[f"{record.get('level')} {record.get('event')}"] += 1
        turn = (str(record.get("session_id")), int(record.get("turn", 0)))
        if "fallback" in str(record.get("event")):
            facts.fallback_events[str(record.get("event"))] += 1
        if record.get("event") == "live_transcription.fallback":
            fallbacks.add(turn)
        elif record.get("event") == "turn.completed":
            facts.requests[turn] = list(record.get("provider_requests") or [])
            mode = str(record.get("mode"))
            facts.turns[mode] += 1
            facts.speculative.setdefault(mode, Counter()).update(speculative_fields(record))
    return facts


def p50(values: list[float]) -> float | None:
    return round(percentile(values, 50), 1) if values else None


GAPS = ("to_stt", "stt_to_llm", "llm_to_tts", "tts_to_client")
"""The server's share of a turn, between the providers' parts of its critical path: from the
end of the user's audio to the transcription request (commit) arriving at the provider; from
the final transcript going out to the chat request arriving; from the token that completes
the first speakable piece going out to the speech request arriving; from the first speech
audio going out to it arriving at the client."""


def measured_path(
    requests: list[dict[str, str]],
    times: dict[str, dict[str, Any]],
    piece_tokens: int,
    stop_sent_at: float,
    first_audio_at: float,
) -> dict[str, Any] | None:
    """A turn's critical path as the fakes timed it, from the requests its log line names (the
    first of each stage; of the language model's, the last one asked before that speech): each
    provider's part, and the gaps between them. None when a part is missing (a request the
    fakes did not time).

    When the reply's request went out before the final transcript (preemptive generation),
    the transcription is off the critical path: its part and "to_stt" are 0, and "stt_to_llm"
    is from the stop to that request (0 if it went out before the stop)."""
    first: dict[str, dict[str, Any]] = {}
    asked: list[dict[str, Any]] = []  # the language model's requests
    for request in requests:
        timed = times.get(request["id"])
        if timed is None or not timed["sent_at"]:
            continue
        if request["stage"] == "llm":
            asked.append(timed)
        if request["stage"] not in first:
            first[request["stage"]] = timed
    if set(first) != {"stt", "llm", "tts"}:
        return None
    stt, tts = first["stt"], first["tts"]
    spoken_from = [t for t in asked if t["received_at"] <= tts["received_at"]] or asked
    llm = max(spoken_from, key=lambda t: t["received_at"])
    first["llm"] = llm
    # The final transcript (a Realtime .completed, or the last event of a streamed upload);
    # the chat chunk that completes the first piece (chunk 0 holds only the role); the first
    # speech audio.
    answered = {
        "stt": stt["sent_at"][-1],
        "llm": llm["sent_at"][min(piece_tokens, len(llm["sent_at"]) - 1)],
        "tts": tts["sent_at"][0],
    }
    providers = {stage: (answered[stage] - first[stage]["received_at"]) * 1000 for stage in first}
    gaps = {
        "to_stt": stt["received_at"] - stop_sent_at,
        "stt_to_llm": llm["received_at"] - answered["stt"],
        "llm_to_tts": tts["received_at"] - answered["llm"],
        "tts_to_client": first_audio_at - answered["tts"],
    }
    preemptive = llm["received_at"] < answered["stt"]
    if preemptive:
        started = max(llm["received_at"], stop_sent_at)
        providers["stt"] = 0.0
        providers["llm"] = (answered["llm"] - started) * 1000
        gaps["to_stt"] = 0.0
        gaps["stt_to_llm"] = started - stop_sent_at
    return {
        "preemptive": preemptive,
        "providers_ms": {k: round(v, 1) for k, v in providers.items()},
        "critical_path_ms": round(sum(providers.values()), 1),
        "gaps_ms": {k: round(v * 1000, 2) for k, v in gaps.items()},
        "overhead_ms": round(sum(gaps.values()) * 1000, 1),
    }


def pipelined_rows(
    results: Results,
    profile: LatencyProfile,
    audio_s: float,
    *,
    live_used: bool,
    log: ServerLog,
    times: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per pipelined turn: its times and where its overhead went (ms)."""
    rows = []
    for r in results.pipelined:
        m = r.metrics
        assert m is not None
        assert m.voice_to_voice_ms is not None
        assert r.stop_sent_at is not None
        assert r.first_audio_at is not None
        session, turn = r.session.session_id, r.turn or 0
        live = live_used and (session, turn) not in log.fallbacks
        expected = pipelined_stages(profile, audio_s, r.reply, live=live)
        measured = measured_path(
            log.requests.get((session, turn), []),
            times,
            first_piece(r.reply)[1],
            r.stop_sent_at,
            r.first_audio_at,
        )
        preemptive = measured is not None and measured["preemptive"]
        if preemptive:  # the reply began before the final transcript: the stt is off the path
            expected["stt"] = 0.0
        critical = sum(expected.values()) * 1000
        client = (r.first_audio_at - r.stop_sent_at) * 1000
        overhead = client - critical
        by_stage = {
            "stt": 0.0 if preemptive else (m.stt_ms or 0) - expected["stt"] * 1000,
            "llm_first_token": (m.llm_first_token_ms or 0) - profile.llm_first_token_s * 1000,
            "tts_first_audio": (m.tts_first_audio_ms or 0) - profile.tts_first_audio_s * 1000,
            "transport": client - m.voice_to_voice_ms,
        }
        by_stage["other"] = overhead - sum(by_stage.values())
        rows.append(
            {
                "session": session,
                "turn": turn,
                "live": live,
                "client_voice_to_voice_ms": round(client, 1),
                "server_voice_to_voice_ms": m.voice_to_voice_ms,
                "critical_path_ms": round(critical, 1),
                "overhead_ms": round(overhead, 1),
                "server_overhead_ms": round(m.voice_to_voice_ms - critical, 1),
                "overhead_by_stage_ms": {k: round(v, 1) for k, v in by_stage.items()},
                "preemptive": preemptive,
                "measured": measured,
                "metrics": m.model_dump(exclude={"type", "turn"}),
            }
        )
    return rows


def sequential_rows(
    turns: list[SequentialTurn], profile: LatencyProfile, audio_s: float
) -> list[dict[str, Any]]:
    """One row per sequential turn (ms); its overhead is beyond the providers' profile."""
    return [
        {
            "transcribed_ms": round(s.transcribed_ms, 1),
            "replied_ms": round(s.replied_ms, 1),
            "first_audio_ms": round(s.first_audio_ms, 1),
            "whole_file_ms": round(s.whole_file_ms, 1),
            "overhead_ms": round(
                s.first_audio_ms - sequential_s(profile, audio_s, s.reply) * 1000, 1
            ),
        }
        for s in turns
    ]


def summarize(
    rows: list[dict[str, Any]],
    sequential: list[dict[str, Any]],
    errors: list[str],
    profile: LatencyProfile,
    audio_s: float,
    reply: str,
    failed: Counter[str] | None = None,
) -> dict[str, Any]:
    """The run's figures, as the JSON holds them; `failed` turns (by design) count in every
    percentile of their design as the timeout."""
    failed = failed or Counter()
    lost, lost_sequential = failed["pipelined"], failed["sequential"]

    def column(name: str) -> list[float]:
        return [float(row[name]) for row in rows]

    live_turns = sum(row["live"] for row in rows)
    mode = "live" if live_turns == len(rows) else "completed recording"
    if 0 < live_turns < len(rows):
        mode = f"mixed: {live_turns} live, {len(rows) - live_turns} fell back"
    stages = pipelined_stages(profile, audio_s, reply, live=live_turns > 0)
    preemptive_turns = sum(row["preemptive"] for row in rows)
    if rows and preemptive_turns == len(rows):
        stages["stt"] = 0.0  # every reply began before its final transcript
    metric_names = rows[0]["metrics"] if rows else {}
    seq_providers = sequential_stages(profile, audio_s, reply)
    seq_stages = {
        "stt": [s["transcribed_ms"] for s in sequential],
        "llm": [s["replied_ms"] - s["transcribed_ms"] for s in sequential],
        "tts_first_audio": [s["first_audio_ms"] - s["replied_ms"] for s in sequential],
    }
    first = spread([s["first_audio_ms"] for s in sequential], lost_sequential)
    whole = spread([s["whole_file_ms"] for s in sequential], lost_sequential)
    client = spread(column("client_voice_to_voice_ms"), lost)
    client_p50 = client.get("p50")
    ratio_first = client_p50 / first["p50"] if client_p50 and first.get("p50") else None
    ratio_whole = client_p50 / whole["p50"] if client_p50 and whole.get("p50") else None
    profile_overhead = spread(column("overhead_ms"), lost)
    plain_overhead = spread([s["overhead_ms"] for s in sequential], lost_sequential)
    measured = [row["measured"] for row in rows if row["measured"] is not None]
    expected = {
        "stt": stages["stt"],
        "llm": stages["llm_first_piece"],
        "tts": stages["tts_first_audio"],
    }
    measured_overhead = spread([m["overhead_ms"] for m in measured], lost)
    # The providers' critical path is what they took: against the fakes' own timing of each
    # request when every turn has it, else against the profile (their nominal latencies).
    all_measured = bool(rows) and len(measured) == len(rows)
    overhead = measured_overhead if all_measured else profile_overhead
    # Both against the providers' profile, in the same run: the machine's noise falls on both.
    plain_p50 = plain_overhead.get("p50")
    overhead_ratio = (
        round(profile_overhead["p50"] / plain_p50, 3)
        if plain_p50 and plain_p50 > 0 and "p50" in profile_overhead
        else None
    )
    return {
        "question_s": round(audio_s, 2),
        "reply": reply,
        "transcription": mode,
        "profile": dataclasses.asdict(profile),
        "pipelined": {
            "turns": len(rows) + lost,
            "errors": lost,
            "preemptive_turns": preemptive_turns,
            "critical_path_ms": {k: round(v * 1000, 1) for k, v in stages.items()},
            "client_voice_to_voice_ms": client,
            "server_voice_to_voice_ms": spread(column("server_voice_to_voice_ms"), lost),
            "overhead_ms": profile_overhead,
            "overhead_ratio_to_plain_client_p50": overhead_ratio,
            "server_overhead_ms": spread(column("server_overhead_ms"), lost),
            "measured": {
                "note": "the providers' parts of each turn's critical path as the fakes timed "
                "its requests (arrival to the answer that matters); overhead = the rest",
                "turns": len(measured),
                "critical_path_ms": spread([m["critical_path_ms"] for m in measured], lost),
                "providers_ms_p50": {
                    stage: p50([m["providers_ms"][stage] for m in measured]) for stage in expected
                },
                "providers_late_ms_p50": {
                    stage: p50(
                        [m["providers_ms"][stage] - expected[stage] * 1000 for m in measured]
                    )
                    for stage in expected
                },
                "overhead_ms": measured_overhead,
                "gaps_ms_p50": {gap: p50([m["gaps_ms"][gap] for m in measured]) for gap in GAPS},
            },
            "overhead_by_stage_ms_p50": {
                name: p50([row["overhead_by_stage_ms"][name] for row in rows])
                for name in STAGE_EXCESS
            },
            "server_stages_ms_p50": {
                name: p50(
                    [
                        float(row["metrics"][name])
                        for row in rows
                        if isinstance(row["metrics"][name], int | float)
                    ]
                )
                for name in metric_names
                if isinstance(metric_names[name], int | float | None)
            },
        },
        "sequential": {
            "turns": len(sequential) + lost_sequential,
            "errors": lost_sequential,
            "note": "upload the completed recording, wait for the whole reply (non-streaming), "
            "then the speech: timed to its first bytes, and to the whole file",
            "providers_ms": {k: round(v * 1000, 1) for k, v in seq_providers.items()},
            "first_audio_ms": first,
            "whole_file_ms": whole,
            "overhead_first_audio_ms": plain_overhead,
            "overhead_by_stage_ms_p50": {
                name: round(percentile(values, 50) - seq_providers[name] * 1000, 1)
                for name, values in seq_stages.items()
                if values
            },
        },
        "ratio_p50": {
            "target_is_against": "the sequential design's first speech bytes (the stricter)",
            "vs_sequential_first_audio": round(ratio_first, 3) if ratio_first else None,
            "vs_sequential_whole_file": round(ratio_whole, 3) if ratio_whole else None,
        },
        "overhead_against": "the providers' measured times"
        if all_measured
        else "the providers' profile",
        "targets": {
            "no_errors": not errors,
            "ratio_p50_at_most_0.5": ratio_first is not None and ratio_first <= 0.5,
            "overhead_p50_at_most_10_ms": overhead.get("p50", 1e9) <= 10,
            "overhead_p99_at_most_30_ms": overhead.get("p99", 1e9) <= 30,
        },
        "errors": {"count": len(errors), "first": errors[:10]},
    }


def print_turns(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        m, measured = row["metrics"], row["measured"]
        if measured is None:
            parts = ", ".join(f"{k} {v:.0f}" for k, v in row["overhead_by_stage_ms"].items())
            overhead = f"overhead against the profile {row['overhead_ms']:4.0f} ({parts})"
        else:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in measured["gaps_ms"].items())
            overhead = (
                f"providers {measured['critical_path_ms']:6.1f}, "
                f"overhead {measured['overhead_ms']:4.1f} ({parts})"
            )
        print(
            f"{row['session'][-6:]} turn {row['turn']:2d}: voice-to-voice "
            f"{row['client_voice_to_voice_ms']:5.0f} ms at the client, {m['voice_to_voice_ms']} "
            f"at the server; {overhead}"
        )


def print_report(summary: dict[str, Any]) -> None:
    pipe, seq, ratio = summary["pipelined"], summary["sequential"], summary["ratio_p50"]

    def row(name: str, figures: dict[str, float]) -> None:
        cells = "".join(f"{figures.get(f'p{q}', float('nan')):9.0f}" for q in QUANTILES)
        print(f"  {name:46s}{cells}{figures.get('errors', 0):8.0f}")

    def pairs(figures: dict[str, Any]) -> str:
        return ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in figures.items())

    print()
    print(
        f"{summary['sessions']} session(s), {pipe['turns']} pipelined and {seq['turns']} "
        f"sequential turns of {summary['question_s']} s questions; "
        f"transcription: {summary['transcription']}"
    )
    print(f"reply: {summary['reply']!r}")
    head = "ms (a failed turn counts as 30000)"
    print(f"  {head:46s}{'p50':>9s}{'p95':>9s}{'p99':>9s}{'errors':>8s}")
    row("push-to-talk: voice-to-voice at the client", pipe["client_voice_to_voice_ms"])
    row("voice-to-voice at the server (turn.metrics)", pipe["server_voice_to_voice_ms"])
    critical = sum(pipe["critical_path_ms"].values())
    measured = pipe["measured"]
    if measured["turns"]:
        row("providers' critical path, as the fakes timed it", measured["critical_path_ms"])
        row("overhead: client v2v - that critical path", measured["overhead_ms"])
    row(f"overhead: client v2v - profile's path ({critical:.0f})", pipe["overhead_ms"])
    if pipe.get("preemptive_turns"):
        print(
            f"  ({pipe['preemptive_turns']} of {pipe['turns']} turns began the reply before the "
            "final transcript: their path leaves out the transcription)"
        )
    row("overhead: server v2v - profile's path", pipe["server_overhead_ms"])
    row("sequential: to the speech's first bytes", seq["first_audio_ms"])
    row("sequential: to the whole speech file", seq["whole_file_ms"])
    row("sequential client's own overhead (1st bytes)", seq["overhead_first_audio_ms"])
    hands_free = summary.get("hands_free")
    if hands_free:
        window = hands_free["silence_window_ms"]
        row("hands-free: end of speech -> 1st audio", hands_free["voice_to_voice_ms"])
        row(f"  end of speech -> vad.speech_stopped ({window})", hands_free["detector_stop_ms"])
        row(
            "  the server's voice_to_voice_ms (from its stop)",
            hands_free["server_voice_to_voice_ms"],
        )
    for compatible in summary.get("compatible", []):
        row(f"{compatible['name']}: v2v", compatible["voice_to_voice_ms"])
    print(
        f"server overhead p50 against the profile / the plain-SDK client's own in this run: "
        f"{pipe['overhead_ratio_to_plain_client_p50']} "
        f"({pipe['overhead_ms'].get('p50')} / {seq['overhead_first_audio_ms'].get('p50')} ms)"
    )
    print(
        f"ratio of p50s, pipelined / sequential: {ratio['vs_sequential_first_audio']} against its "
        f"first speech bytes, {ratio['vs_sequential_whole_file']} against the whole file"
    )
    print(f"critical path, ms: {pairs(pipe['critical_path_ms'])}")
    if measured["turns"]:
        print(f"providers as timed, p50 ms: {pairs(measured['providers_ms_p50'])}")
        print(f"  their lateness against the profile: {pairs(measured['providers_late_ms_p50'])}")
        print(f"overhead between them, p50 ms: {pairs(measured['gaps_ms_p50'])}")
    print(
        "overhead by stage against the profile, p50 ms (server's metrics - profile): "
        f"{pairs(pipe['overhead_by_stage_ms_p50'])}"
    )
    print(f"  the sequential client's, for comparison: {pairs(seq['overhead_by_stage_ms_p50'])}")
    print(f"server stages, p50 ms: {pairs(pipe['server_stages_ms_p50'])}")
    if hands_free:
        print(f"hands-free server stages, p50 ms: {pairs(hands_free['server_stages_ms_p50'])}")
    for mode, wasted in summary.get("speculative_per_turn", {}).items():
        shown = pairs(wasted) if wasted else "n/a (the server reports none)"
        print(f"speculative work per {mode} turn: {shown}")
    for compatible in summary.get("compatible", []):
        print(
            f"{compatible['name']}: ratio p50 / sequential {compatible['ratio_p50_vs_sequential']}"
            f"; live transcription connections {compatible['live_transcription_connections']}, "
            f"Realtime handshakes refused {compatible['realtime_handshakes_refused']}, "
            f"fallbacks logged {compatible['fallbacks_logged']}"
            + (f"; {compatible['error']}" if compatible.get("error") else "")
        )
    busy = ", ".join(f"{k} {v}" for k, v in summary["cores_busy"].items())
    print(f"CPU cores kept busy on average: {busy} (of {summary['machine']['cpus']})")
    load = summary["machine"].get("load_average")
    if load:
        print(f"load average (1, 5, 15 min) before and after: {load['before']}, {load['after']}")
    lag = summary["bench_loop_lag_ms"]
    print(
        f"bench event loop lag p50/p99: {lag.get('p50')}/{lag.get('p99')} ms; "
        f"errors: {summary['errors']['count']} {summary['errors']['first'][:3]}"
    )
    print(f"targets; overhead against {summary['overhead_against']}:")
    for target, met in summary["targets"].items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    if summary["sessions"] > 1:
        print("  (the issue sets the overhead targets for one session)")


def hands_free_summary(
    turns: list[HandsFreeTurn], failed: int, speech_s: float, push_to_talk_p50: float | None
) -> dict[str, Any]:
    """The hands-free rows: voice-to-voice from the end of speech at the client, the detector's
    stop and the server's own metric (from that stop), failures counted in."""
    metrics = [t.metrics for t in turns if t.metrics is not None]
    target = SILENCE_WINDOW_MS + push_to_talk_p50 - 300 if push_to_talk_p50 else None
    v2v = spread([t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None], failed)
    return {
        "question": HANDS_FREE_QUESTION,
        "speech_s": round(speech_s, 2),
        "silence_window_ms": SILENCE_WINDOW_MS,
        "turns": len(turns) + failed,
        "errors": failed,
        "note": "voice-to-voice from the end of speech (the moment its last frame went out) to "
        "the first reply audio at the client; the server's voice_to_voice_ms starts at its "
        "detector's stop, after the silence window",
        "voice_to_voice_ms": v2v,
        "detector_stop_ms": spread(
            [t.detector_stop_ms for t in turns if t.detector_stop_ms is not None], failed
        ),
        "server_voice_to_voice_ms": spread(
            [float(m.voice_to_voice_ms) for m in metrics if m.voice_to_voice_ms is not None],
            failed,
        ),
        "server_stages_ms_p50": {
            name: p50([float(v) for m in metrics if (v := getattr(m, name)) is not None])
            for name in ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms")
        },
        "target": {
            "p50_at_most_ms": target,
            "rule": "the silence window + push-to-talk's p50 - 300 ms",
            "met": target is not None and v2v.get("p50", 1e9) <= target,
        },
    }


COMPATIBLE = (
    ("compatible, Realtime endpoint", True),
    ("compatible, no Realtime endpoint", False),
)
"""The compatible-server rows: (name, whether the fakes serve the Realtime endpoint)."""


def compatible_rows(
    args: argparse.Namespace,
    profile: LatencyProfile,
    pcm: bytes,
    turns: int,
    sequential_p50: float | None,
) -> list[dict[str, Any]]:
    """Push-to-talk turns against a compatible server at a base URL with the server's default
    settings, on fakes with the Realtime endpoint and on fakes without it."""
    rows = []
    for name, realtime in COMPATIBLE:
        print(f"{name}: {turns} push-to-talk turns, the server's default settings")
        results, error = Results(), None
        fakes = Fakes.start(profile, realtime=realtime)
        try:
            with tempfile.TemporaryDirectory() as workdir:
                port = free_port()
                server, _ = start_server(port, Path(workdir), compatible_env(fakes.base_url))
                try:
                    url = f"ws://127.0.0.1:{port}/ws"
                    results = asyncio.run(
                        run_bench(url, fakes.base_url, pcm, 1, turns, 0, sequential=False)
                    )
                except SystemExit as err:  # a failed warm-up: the row says so
                    error = str(err)
                    results.failed["pipelined"] += turns
                finally:
                    stop_server(server)
                log = server_log_facts(Path(workdir) / "server.log")
        finally:
            counts: dict[str, int] = fakes.stop().get("counts", {})
        v2v = spread(
            [float(r.client_voice_to_voice_ms or 0) for r in results.pipelined],
            results.failed["pipelined"],
        )
        ratio = v2v["p50"] / sequential_p50 if sequential_p50 and "p50" in v2v else None
        rows.append(
            {
                "name": name,
                "realtime_endpoint": realtime,
                "settings": "defaults (VOICE_FSM_STT__LIVE unset), speech by the Speech API",
                "turns": len(results.pipelined) + results.failed["pipelined"],
                "errors": results.failed["pipelined"],
                "error": error or (results.errors[0] if results.errors else None),
                "voice_to_voice_ms": v2v,
                "ratio_p50_vs_sequential": round(ratio, 3) if ratio else None,
                "live_transcription_connections": counts.get("server realtime transcription", 0),
                "realtime_handshakes_refused": counts.get("server websocket", 0),
                "fallbacks_logged": dict(log.fallback_events),
                "server_log": dict(log.levels),
            }
        )
    return rows


def draw_chart(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, over, bars) = plt.subplots(1, 3, figsize=(18, 5), width_ratios=(1.1, 1, 1))
    pipe, seq, turns = summary["pipelined"], summary["sequential"], summary["sequential_turns"]
    series = [
        ("pipelined (this server)", [r["client_voice_to_voice_ms"] for r in summary["turns"]]),
        ("sequential: first speech bytes", [r["first_audio_ms"] for r in turns]),
        ("sequential: whole speech file", [r["whole_file_ms"] for r in turns]),
    ]
    colors = ("tab:blue", "tab:orange", "tab:red")
    for (label, values), color in zip(series, colors, strict=True):
        if values:
            ordered = np.sort(np.asarray(values, dtype=float)) / 1000
            share = np.arange(1, len(ordered) + 1) / len(ordered)
            cdf.step(ordered, share, where="post", label=label, color=color)
    critical = sum(pipe["critical_path_ms"].values()) / 1000
    cdf.axvline(critical, color="tab:blue", linestyle=":", label="pipelined: providers only")
    cdf.set_xlabel("voice-to-voice at the client (s)")
    cdf.set_ylabel("share of turns")
    cdf.set_ylim(0, 1.02)
    cdf.grid(alpha=0.3)
    cdf.legend(loc="lower right", fontsize=8)

    overheads = [
        (
            "client v2v - providers as timed",
            [r["measured"]["overhead_ms"] for r in summary["turns"] if r["measured"]],
        ),
        ("client v2v - profile's path", [r["overhead_ms"] for r in summary["turns"]]),
        ("server v2v - profile's path", [r["server_overhead_ms"] for r in summary["turns"]]),
        ("sequential client's own (profile)", [r["overhead_ms"] for r in turns]),
    ]
    for (label, values), color in zip(
        overheads, ("tab:blue", "tab:cyan", "tab:purple", "tab:orange"), strict=True
    ):
        if values:
            ordered = np.sort(np.asarray(values, dtype=float))
            share = np.arange(1, len(ordered) + 1) / len(ordered)
            over.step(ordered, share, where="post", label=label, color=color)
    for target in (10, 30):
        over.axvline(target, color="gray", linestyle="--", linewidth=1)
    over.set_xlabel("overhead beyond the providers' profile (ms); targets 10 (p50), 30 (p99)")
    worst = max(max(values, default=0.0) for _, values in overheads)
    p99 = summary["pipelined"]["overhead_ms"].get("p99", 0.0)
    if worst > max(40.0, 1.5 * p99):  # a rare outlier would squash the rest: name it instead
        over.set_xlim(right=max(40.0, 1.5 * p99))
        over.set_title(f"(x axis cut; the slowest turn's overhead: {worst:.0f} ms)", fontsize=9)
    over.set_ylim(0, 1.02)
    over.grid(alpha=0.3)
    over.legend(loc="lower right", fontsize=8)

    live = summary["transcription"] == "live"
    crit, providers = pipe["critical_path_ms"], seq["providers_ms"]
    rows = [
        (
            "pipelined",
            pipe["client_voice_to_voice_ms"].get("p50", 0),
            [
                ("live transcript final" if live else "transcript", crit["stt"], "tab:green"),
                ("reply: to its 1st piece / whole", crit["llm_first_piece"], "tab:purple"),
                ("speech: 1st audio", crit["tts_first_audio"], "tab:olive"),
                ("overhead (p50)", max(0.0, pipe["overhead_ms"].get("p50", 0)), "black"),
            ],
        ),
        (
            "sequential",
            seq["first_audio_ms"].get("p50", 0),
            [
                ("transcript", providers["stt"], "tab:green"),
                ("reply: to its 1st piece / whole", providers["llm"], "tab:purple"),
                ("speech: 1st audio", providers["tts_first_audio"], "tab:olive"),
                ("speech: rest of the file", providers["tts_rest"], "tab:gray"),
            ],
        ),
    ]
    seen: set[str] = set()
    for y, (_name, measured, parts) in enumerate(rows):
        left = 0.0
        for label, ms, color in parts:
            shown = label if label not in seen else None
            seen.add(label)
            bars.barh(y, ms / 1000, left=left, color=color, label=shown, height=0.5)
            left += ms / 1000
        bars.plot([measured / 1000] * 2, [y - 0.3, y + 0.3], color="tab:red", linewidth=2)
        bars.annotate(
            f"p50 {measured / 1000:.2f} s", (measured / 1000, y - 0.32), ha="center", fontsize=8
        )
    bars.set_yticks(range(len(rows)), [name for name, _, _ in rows])
    bars.invert_yaxis()
    bars.set_xlabel("s from the end of the user's audio: providers' profile, measured p50 (red)")
    bars.grid(axis="x", alpha=0.3)
    bars.legend(loc="lower right", fontsize=7)
    ratio = summary["ratio_p50"]["vs_sequential_first_audio"]
    fig.suptitle(
        f"voice-to-voice, {summary['sessions']} session(s), transcription: "
        f"{summary['transcription']}; p50 pipelined / sequential (1st bytes): {ratio}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def cores_busy(
    pids: dict[str, int | None], before: dict[str, float | None], wall_s: float
) -> dict[str, float]:
    """How many CPU cores each process kept busy on average since `before`."""
    out = {}
    for name, pid in pids.items():
        now, then = cpu_seconds(pid), before[name]
        if now is not None and then is not None and wall_s > 0:
            out[name] = round((now - then) / wall_s, 2)
    return out


def parse_profile(overrides: list[str]) -> LatencyProfile:
    profile = DEFAULT_PROFILE
    names = {f.name: f for f in dataclasses.fields(LatencyProfile)}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in names:
            raise SystemExit(f"--profile: no field {name!r}; fields: {', '.join(names)}")
        kind = type(getattr(DEFAULT_PROFILE, name))
        profile = dataclasses.replace(profile, **{name: kind(value)})
    return profile


def paired_block_differences(on: list[list[float]], off: list[list[float]]) -> list[float]:
    """The median of each block with metrics minus that of the block without beside it."""
    return [
        statistics.median(a) - statistics.median(b)
        for a, b in zip(on, off, strict=False)
        if a and b
    ]


@dataclass
class Interleaved:
    """What `run_interleaved` measured: each server's turns and log facts, and what the fakes
    received from all of them."""

    audio_s: float
    turns: int
    results: dict[str, Results]
    logs: dict[str, ServerLog]
    received: dict[str, Any]


def run_interleaved(
    args: argparse.Namespace,
    profile: LatencyProfile,
    turns: int,
    servers_env: dict[str, dict[str, str]],
) -> Interleaved:
    """One server per entry of `servers_env` (its settings beyond `server_env`'s), all on the
    same fakes, measured in alternating blocks of `turns` turns so that the machine's drift
    falls on them alike."""
    pcm = voiced(args.seconds)
    blocks = args.blocks
    fakes = Fakes.start(profile)
    results = {name: Results() for name in servers_env}
    logs: dict[str, ServerLog] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
            try:
                for index, (name, extra) in enumerate(servers_env.items()):
                    env = server_env(fakes.base_url, realtime=fakes.realtime, tts=args.tts)
                    env.update(extra)
                    folder = Path(workdir) / f"server-{index}"
                    folder.mkdir()
                    port = free_port()
                    servers[name] = (start_server(port, folder, env)[0], port, folder)
                for block in range(blocks):
                    # Alternate which goes first, so that neither always runs just after the
                    # other's turn has finished (its logging, its collection of garbage).
                    order = list(servers.items())
                    for name, (_, port, _) in order if block % 2 == 0 else order[::-1]:
                        print(f"block {block + 1} of {blocks}: {name}, {turns} turns")
                        got = asyncio.run(
                            run_bench(
                                f"ws://127.0.0.1:{port}/ws",
                                fakes.base_url,
                                pcm,
                                args.sessions,
                                turns,
                                args.stagger,
                            )
                        )
                        results[name].pipelined += got.pipelined
                        results[name].errors += got.errors
            finally:
                for process, _, _ in servers.values():
                    stop_server(process)
            for name, (_, _, folder) in servers.items():
                logs[name] = server_log_facts(folder / "server.log")
    finally:
        received = fakes.stop()
    return Interleaved(len(pcm) / 2 / SAMPLE_RATE, turns, results, logs, received)


def server_figures(
    run: Interleaved, name: str, profile: LatencyProfile
) -> tuple[dict[str, Any], list[list[float]]]:
    """One server's figures in an interleaved run, and the server's part of each turn's path
    as the fakes timed it (see measured_path), block by block (none after an error, which
    would shift the blocks)."""
    results = run.results[name]
    rows = pipelined_rows(
        results,
        profile,
        run.audio_s,
        live_used=run.received.get("counts", {}).get("server realtime transcription", 0) > 0,
        log=run.logs[name],
        times=run.received.get("times", {}),
    )
    # The gaps between the providers' own sends and receives, as the fakes timed them: the
    # server's part alone, without the fakes' timer jitter that the nominal profile keeps.
    measured = [
        None if row["measured"] is None else float(row["measured"]["overhead_ms"]) for row in rows
    ]
    blocks = (
        [
            [m for m in measured[start : start + run.turns] if m is not None]
            for start in range(0, len(rows), run.turns)
        ]
        if not results.errors
        else []
    )
    figures = {
        "turns": len(rows),
        "errors": len(results.errors),
        # At the client, against the providers' measured path: to the tenth of a ms.
        "overhead_ms": spread([float(row["overhead_ms"]) for row in rows]),
        "server_overhead_ms": spread([float(row["server_overhead_ms"]) for row in rows]),
        "measured_overhead_ms": spread([m for m in measured if m is not None]),
        "all_measured": bool(rows) and None not in measured,
        "voice_to_voice_ms": spread([float(row["client_voice_to_voice_ms"]) for row in rows]),
    }
    return figures, blocks


def compare_metrics(args: argparse.Namespace, profile: LatencyProfile, turns: int) -> None:
    """Two servers on the same fakes, one recording metrics and one not, measured in
    alternating blocks of `turns` turns so that the machine's drift falls on both alike."""
    configs = {"metrics on": "true", "metrics off": "false"}
    run = run_interleaved(
        args,
        profile,
        turns,
        {name: {"VOICE_FSM_METRICS__ENABLED": enabled} for name, enabled in configs.items()},
    )
    figures: dict[str, Any] = {}
    block_overheads: dict[str, list[list[float]]] = {}
    for name in configs:
        figures[name], block_overheads[name] = server_figures(run, name, profile)
        del figures[name]["all_measured"]
    on, off = figures["metrics on"], figures["metrics off"]
    difference = on["overhead_ms"]["p50"] - off["overhead_ms"]["p50"]
    figures["overhead_p50_difference_ms"] = round(difference, 2)
    # Neighbouring blocks share the machine's load of the moment: the median of their
    # differences is steadier than the difference of the two medians on a busy machine. They
    # compare the server's part as the fakes timed it (see measured_path).
    paired = paired_block_differences(block_overheads["metrics on"], block_overheads["metrics off"])
    figures["overhead_paired_difference_ms"] = spread(paired)
    print()
    for name in configs:
        row = figures[name]
        overhead = row["overhead_ms"]
        print(
            f"{name}: {row['turns']} turns, {row['errors']} errors; overhead p50 "
            f"{overhead['p50']:.1f} ms, p99 {overhead['p99']:.1f} ms; voice-to-voice p50 "
            f"{row['voice_to_voice_ms']['p50']:.0f} ms"
        )
    print(f"overhead p50 with metrics minus without: {difference:+.2f} ms (target: within 1 ms)")
    for name in configs:
        part = figures[name]["measured_overhead_ms"].get("p50", 0)
        print(f"{name}: the server's part of the path as the fakes timed it, p50 {part:.1f} ms")
    if paired:
        print(
            f"that part with metrics minus without, block by block ({len(paired)} pairs of "
            f"neighbouring blocks): median {statistics.median(paired):+.2f} ms"
        )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench-metrics.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")


AGAINST_ROWS = (
    ("voice-to-voice p50", "voice_to_voice_ms", "p50"),
    ("voice-to-voice p99", "voice_to_voice_ms", "p99"),
    ("overhead p50", "overhead", "p50"),
    ("overhead p99", "overhead", "p99"),
)
"""The rows `--against` prints: (label, figure, quantile); "overhead" is the server's part of
each turn's path as the fakes timed it when every turn has it, else against the profile."""


def compare_against(
    args: argparse.Namespace, profile: LatencyProfile, turns: int, rev: str
) -> dict[str, Any]:
    """This tree's server and `rev`'s (a git worktree of that commit, run by the same venv with
    PYTHONPATH at its src), on the same fakes in alternating blocks; their voice-to-voice and
    overhead p50/p99 side by side, and the difference (this tree minus `rev`)."""
    here = current_tree()
    with git_worktree(rev) as (checkout, commit):
        names = {"this tree": here, "against": f"{rev} ({commit[:10]})"}
        sources = {"this tree": REPO / "src", "against": checkout / "src"}
        servers_env = {name: {"PYTHONPATH": str(src)} for name, src in sources.items()}
        for name, env in servers_env.items():
            found = voice_fsm_source(base_env(**env))
            if found != sources[name].resolve():
                wanted = sources[name]
                raise SystemExit(f"{names[name]} would run the code in {found}, not {wanted}")
            print(f"{name}: {names[name]}, code from {found}")
        run = run_interleaved(args, profile, turns, servers_env)
    figures: dict[str, Any] = {}
    blocks: dict[str, list[list[float]]] = {}
    for name in servers_env:
        figures[name], blocks[name] = server_figures(run, name, profile)
        figures[name]["code"] = names[name]
    measured = all(figures[name]["all_measured"] for name in figures)
    for name in servers_env:
        chosen = "measured_overhead_ms" if measured else "overhead_ms"
        figures[name]["overhead"] = figures[name][chosen]
    paired = paired_block_differences(blocks["this tree"], blocks["against"])
    summary: dict[str, Any] = {
        "sessions": args.sessions,
        "turns_per_block": turns,
        "blocks": args.blocks,
        "overhead_against": "the providers' measured times"
        if measured
        else "the providers' profile",
        "servers": figures,
        "difference_ms": {
            f"{figure}_{q}": round(
                figures["this tree"][figure][q] - figures["against"][figure][q], 1
            )
            for _, figure, q in AGAINST_ROWS
            if q in figures["this tree"][figure] and q in figures["against"][figure]
        },
        "overhead_paired_difference_ms": spread(paired),
        "machine": machine(),
    }
    print_against(summary, paired)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench-against.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return summary


def print_against(summary: dict[str, Any], paired: list[float]) -> None:
    here, there = summary["servers"]["this tree"], summary["servers"]["against"]
    print()
    print(
        f"{summary['sessions']} session(s), {summary['blocks']} blocks of "
        f"{summary['turns_per_block']} turns each; overhead against "
        f"{summary['overhead_against']}"
    )
    for name, figures in summary["servers"].items():
        print(f"  {name}: {figures['code']}: {figures['turns']} turns, {figures['errors']} errors")
    print(f"  {'ms':22s}{'this tree':>14s}{'against':>14s}{'difference':>12s}")
    for label, figure, q in AGAINST_ROWS:
        a, b = here[figure].get(q), there[figure].get(q)
        if a is None or b is None:
            continue
        print(f"  {label:22s}{a:14.1f}{b:14.1f}{a - b:+12.1f}")
    if paired:
        print(
            f"  overhead as the fakes timed it, this tree minus against, block by block "
            f"({len(paired)} pairs of neighbouring blocks): median "
            f"{statistics.median(paired):+.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1, help="concurrent clients")
    parser.add_argument("--turns", type=int, help="turns per client (default 10, 3 with >1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the question")
    parser.add_argument("--stagger", type=float, default=0.2, help="seconds between starts")
    parser.add_argument(
        "--profile", action="append", default=[], metavar="NAME=VALUE",
        help="change a latency of the profile, e.g. llm_tokens_per_s=50",
    )  # fmt: skip
    parser.add_argument(
        "--tts", choices=("speech", "realtime"), default="realtime",
        help="the server's text-to-speech: a Realtime session (its default with OpenAI's "
        "API) or the Speech API (HTTP, as for compatible servers)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=0, help="the server's port; 0: a free one")
    parser.add_argument("--out-dir", default="artifacts")
    parser.add_argument(
        "--compare-metrics", action="store_true",
        help="the server's overhead with metrics on and off, in one run (alternating blocks)",
    )  # fmt: skip
    parser.add_argument(
        "--against", metavar="REV",
        help="this tree's server and REV's (a git worktree of that commit, the same venv), "
        "in one run (alternating blocks): voice-to-voice and overhead p50/p99 side by side",
    )  # fmt: skip
    parser.add_argument(
        "--blocks", type=int, default=3, help="--compare-metrics, --against: blocks each"
    )
    parser.add_argument(
        "--speech-to-speech", action="store_true",
        help="the cascade and speech-to-speech mode on the same fakes, turn for turn "
        "(bench/s2s_latency.py): voice-to-voice p50/p99 of both",
    )  # fmt: skip
    parser.add_argument(
        "--s2s-first-audio", type=float, default=0.5, metavar="S",
        help="--speech-to-speech: the Realtime model's first audio after response.create",
    )  # fmt: skip
    parser.add_argument(
        "--no-hands-free", action="store_true", help="no hands-free turns (they need Piper)"
    )
    parser.add_argument("--no-compatible", action="store_true", help="no compatible-server rows")
    parser.add_argument(
        "--readme", action="store_true",
        help=f"also write {README_JSON.relative_to(REPO)}, the figures `make docs` puts into "
        "the README",
    )  # fmt: skip
    args = parser.parse_args()
    turns = args.turns or (10 if args.sessions == 1 else 3)
    if args.sessions < 1 or turns < 1:
        raise SystemExit("--sessions and --turns must be at least 1")
    profile = parse_profile(args.profile)
    if args.compare_metrics and args.against:
        raise SystemExit("--compare-metrics and --against: one comparison at a time")
    if args.compare_metrics:
        compare_metrics(args, profile, turns)
        return
    if args.against:
        compare_against(args, profile, turns, args.against)
        return
    if args.speech_to_speech:
        from s2s_latency import compare_pipelines

        compare_pipelines(
            profile,
            turns=turns,
            seconds=args.seconds,
            first_audio_s=args.s2s_first_audio,
            out_dir=args.out_dir,
        )
        return

    run_default(args, profile, turns)


def run_default(args: argparse.Namespace, profile: LatencyProfile, turns: int) -> dict[str, Any]:
    """The default run: push-to-talk, the sequential design and hands-free turn for turn on one
    server, then the compatible-server rows; prints the report and writes the JSON."""
    load_before = load_average()
    if load_before[0] > 0.5:
        print(f"note: the machine is busy before the start (load {load_before}): noisy figures")
    pcm = voiced(args.seconds)
    audio_s = len(pcm) / 2 / SAMPLE_RATE
    speech = None if args.no_hands_free else trim_speech(spoken(HANDS_FREE_QUESTION))
    port = args.port or free_port()
    fakes = Fakes.start(profile)
    received: dict[str, Any] = {}
    wasted_metrics: dict[str, float] = {}
    try:
        print(f"fakes: {fakes.base_url} (realtime: {'yes' if fakes.realtime else 'no'})")
        with tempfile.TemporaryDirectory() as workdir:
            env = server_env(fakes.base_url, realtime=fakes.realtime, tts=args.tts)
            server, _ = start_server(port, Path(workdir), env)
            pids = {"server": server.pid, "fakes": fakes.process.pid, "bench": os.getpid()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            try:
                results = asyncio.run(
                    run_bench(
                        f"ws://127.0.0.1:{port}/ws",
                        fakes.base_url,
                        pcm,
                        args.sessions,
                        turns,
                        args.stagger,
                        speech=speech,
                    )
                )
                cpu = cores_busy(pids, cpu_before, time.perf_counter() - started)
                wasted_metrics = scrape_counters(port)
            except SystemExit:
                print_log_errors(Path(workdir) / "server.log")
                raise
            finally:
                stop_server(server)
            log = server_log_facts(Path(workdir) / "server.log")
    finally:
        received = fakes.stop()
    counts: dict[str, int] = received.get("counts", {})
    if not results.pipelined:
        raise SystemExit(f"no pipelined turn succeeded: {results.errors[:5]}")

    live_used = counts.get("server realtime transcription", 0) > 0
    reply = results.pipelined[-1].reply
    rows = pipelined_rows(
        results,
        profile,
        audio_s,
        live_used=live_used,
        log=log,
        times=received.get("times", {}),
    )
    seq_rows = sequential_rows(results.sequential, profile, audio_s)
    if args.sessions <= 3:
        print_turns(rows)
    figures = summarize(rows, seq_rows, results.errors, profile, audio_s, reply, results.failed)
    summary: dict[str, Any] = {
        "bench": "make bench",
        "arguments": vars(args),
        "code": current_tree(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sessions": args.sessions,
        "turns_per_session": turns,
        **figures,
    }
    if speech is not None:
        ptt_p50 = figures["pipelined"]["client_voice_to_voice_ms"].get("p50")
        summary["hands_free"] = hands_free_summary(
            results.hands_free, results.failed["hands-free"], len(speech) / 2 / SAMPLE_RATE, ptt_p50
        )
        summary["targets"]["hands_free_p50_at_most_window_plus_push_to_talk_minus_300"] = summary[
            "hands_free"
        ]["target"]["met"]
    summary["speculative_per_turn"] = {
        mode: log.per_turn(mode) for mode in ("push_to_talk", "hands_free") if log.turns[mode]
    }
    summary["speculative_metrics"] = wasted_metrics or None
    if not args.no_compatible:
        sequential_p50 = figures["sequential"]["first_audio_ms"].get("p50")
        summary["compatible"] = compatible_rows(args, profile, pcm, turns, sequential_p50)
    summary.update(
        {
            "bench_loop_lag_ms": spread(results.loop_lag_ms),
            "requests": dict(sorted(counts.items())),
            "server_log": dict(log.levels),
            "machine": {
                **machine(),
                "load_average_1m_before": load_before[0],
                "load_average": {"before": load_before, "after": load_average()},
            },
            "cores_busy": cpu,
            "turns": rows,
            "sequential_turns": seq_rows,
        }
    )
    print_report(summary)
    print(f"requests to the fakes: {summary['requests']}")
    if log.levels:
        print(f"server log, warnings and errors: {dict(log.levels)}")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"bench-{args.sessions}.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    png_path = out_dir / f"bench-{args.sessions}.png"
    draw_chart(summary, png_path)
    print(f"wrote {json_path} and {png_path}")
    if args.readme:
        README_JSON.parent.mkdir(parents=True, exist_ok=True)
        README_JSON.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {README_JSON.relative_to(REPO)}: run `make docs` to put it in the README")
    return summary


if __name__ == "__main__":
    main()
