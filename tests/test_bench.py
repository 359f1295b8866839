"""The benchmark's arithmetic: the latency profile, the critical path, the percentiles. No
servers: the benchmark itself is `make bench`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from voice_fsm.testing.fake_openai import speech_pcm, words
from voice_fsm.testing.latency_profile import (
    DEFAULT_PROFILE,
    REPLY,
    SPEECH_CHUNK_BYTES,
    LatencyProfile,
    critical_path_s,
    fake_openai_config,
    fake_realtime_config,
    first_piece,
    pipelined_stages,
    sequential_s,
    sequential_stages,
    transcription_s,
)

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_profile_follows_the_seeds_measurements() -> None:
    assert transcription_s(DEFAULT_PROFILE, 2.0) == pytest.approx(1.7)
    assert transcription_s(DEFAULT_PROFILE, 4.0) == pytest.approx(2.9)  # grows with the audio
    assert DEFAULT_PROFILE.llm_token_interval_s == pytest.approx(0.04)  # 25 tokens/s
    assert DEFAULT_PROFILE.tts_chunk_interval_s == pytest.approx(0.025)  # 100 ms at 4x


def test_the_first_piece_is_cut_at_the_token_that_ends_the_sentence() -> None:
    assert "".join(words(REPLY)) == REPLY  # the fake streams exactly these tokens
    # "Paris." is the 6th token: its stop ends the piece without waiting for the 7th.
    assert first_piece(REPLY) == ("The capital of France is Paris.", 6)


def test_a_one_sentence_reply_is_spoken_after_its_last_token() -> None:
    assert first_piece("The capital is Paris.") == ("The capital is Paris.", 4)


def test_a_long_first_clause_is_a_piece_of_its_own() -> None:
    piece, tokens = first_piece("Well, let me think about that, it is Paris.")
    assert (piece, tokens) == ("Well, let me think about that,", 7)


def test_critical_path_sums_the_providers_stages() -> None:
    live = pipelined_stages(DEFAULT_PROFILE, 2.0, REPLY, live=True)
    assert live == pytest.approx({"stt": 0.3, "llm_first_piece": 0.6, "tts_first_audio": 0.6})
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, True) == pytest.approx(1.5)
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, False) == pytest.approx(2.9)


def test_sequential_design_waits_for_the_whole_reply_and_optionally_the_whole_file() -> None:
    stages = sequential_stages(DEFAULT_PROFILE, 2.0, REPLY)
    assert stages["llm"] == pytest.approx(0.4 + 24 * 0.04)
    assert sequential_s(DEFAULT_PROFILE, 2.0, REPLY) == pytest.approx(1.7 + 1.36 + 0.6)
    chunks = math.ceil(len(speech_pcm(REPLY)) / SPEECH_CHUNK_BYTES)
    rest = sequential_s(DEFAULT_PROFILE, 2.0, REPLY, whole_file=True) - sequential_s(
        DEFAULT_PROFILE, 2.0, REPLY
    )
    assert rest == pytest.approx((chunks - 1) * 0.025)


def test_the_issues_target_needs_live_transcription_with_the_default_profile() -> None:
    sequential = sequential_s(DEFAULT_PROFILE, 2.0, REPLY)
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, True) <= 0.5 * sequential
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, False) > 0.5 * sequential


def test_the_fakes_take_the_profiles_latencies() -> None:
    profile = LatencyProfile(llm_tokens_per_s=50, tts_realtime_factor=2)
    http = fake_openai_config(profile, reply="Hi.")
    assert (http.stt_delay, http.stt_delay_per_audio_s) == (0.5, 0.6)
    assert (http.llm_first_token_delay, http.llm_token_delay) == (0.4, pytest.approx(0.02))
    assert (http.tts_first_audio_delay, http.tts_chunk_delay) == (0.6, pytest.approx(0.05))
    assert http.reply == "Hi."
    pytest.importorskip("voice_fsm.testing.fake_realtime")
    realtime = fake_realtime_config(dataclasses.replace(profile, realtime_connect_s=0.2))
    assert realtime.transcription_delay == 0.3
    assert realtime.session_delay == 0.2
    assert realtime.delta_every_ms == 200


def test_percentile_is_nearest_rank() -> None:
    percentile = bench_common().percentile
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5
    assert percentile(values, 95) == 10
    assert percentile(values, 99) == 10
    assert percentile([3.0], 99) == 3


def test_metrics_comparison_pairs_neighbouring_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # voice_latency imports `common` from its folder, and its dataclasses need it registered.
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("voice_latency", BENCH / "voice_latency.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "voice_latency", module)
    spec.loader.exec_module(module)
    # A load that doubles every figure of one pair of blocks still gives that pair's difference.
    on = [[10.0, 12.0], [20.0, 24.0], []]
    off = [[9.0, 11.0], [18.0, 22.0], [5.0]]
    assert module.paired_block_differences(on, off) == [1.0, 2.0]


def test_a_worktree_of_a_commit_is_the_code_a_bench_server_runs() -> None:
    common = bench_common()
    with common.git_worktree("HEAD~1") as (checkout, commit):
        assert commit == common._git("rev-parse", "HEAD~1")
        assert common._git("-C", str(checkout), "rev-parse", "HEAD") == commit
        env = common.base_env(PYTHONPATH=str(checkout / "src"))
        assert common.voice_fsm_source(env) == (checkout / "src").resolve()
    assert not checkout.exists()
    assert str(checkout) not in common._git("worktree", "list")


def test_speech_to_speech_is_benched_at_the_profiles_speech_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("s2s_latency", BENCH / "s2s_latency.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "s2s_latency", module)
    spec.loader.exec_module(module)
    latency = module.conversation_latency(DEFAULT_PROFILE, 0.5)
    assert latency.first_audio_s == 0.5
    # The model's audio arrives as fast as the cascade's speech does.
    assert latency.chunk_delay_s == pytest.approx(DEFAULT_PROFILE.tts_chunk_interval_s)
    assert module.figures([]) == {"p50": None, "p99": None}
    assert module.figures([float(v) for v in range(1, 101)]) == {"p50": 50, "p99": 99}


# ---------------------------------------------------------------- the harness


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A bench script as a module (they import `common` and each other from their folder)."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_a_failed_turn_counts_as_the_timeout_and_is_counted() -> None:
    common = bench_common()
    figures = common.spread([100.0, 200.0, 300.0], failed=1)
    assert figures["errors"] == 1
    assert figures["p50"] == 200  # of 100, 200, 300 and the timeout
    assert figures["p99"] == common.TIMEOUT_MS == 30_000
    assert common.spread([], failed=2)["p50"] == 30_000
    assert common.spread([5.0]) == {"errors": 0, "p50": 5, "p95": 5, "p99": 5, "max": 5, "mean": 5}


def turn_row(v2v: float, overhead: float) -> dict[str, object]:
    """A pipelined turn's row as `pipelined_rows` makes it (the fields `summarize` reads)."""
    return {
        "live": True,
        "preemptive": False,
        "client_voice_to_voice_ms": v2v,
        "server_voice_to_voice_ms": v2v - 1,
        "overhead_ms": overhead,
        "server_overhead_ms": overhead - 1,
        "overhead_by_stage_ms": dict.fromkeys(("stt", "llm_first_token", "tts_first_audio"), 0.0)
        | {"transport": 1.0, "other": overhead - 1},
        "measured": None,
        "metrics": {"stt_ms": 300, "voice_to_voice_ms": int(v2v - 1), "tools": []},
    }


def sequential_row(first_audio: float, overhead: float) -> dict[str, float]:
    return {
        "transcribed_ms": 1700.0,
        "replied_ms": 3000.0,
        "first_audio_ms": first_audio,
        "whole_file_ms": first_audio + 1700,
        "overhead_ms": overhead,
    }


def test_the_summary_counts_failures_in_and_gives_the_overhead_against_the_plain_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = bench_module("voice_latency", monkeypatch)
    rows = [turn_row(1550, 10), turn_row(1560, 20)]
    sequential = [sequential_row(3700, 40), sequential_row(3720, 60), sequential_row(3710, 50)]
    failed = bench.Counter({"pipelined": 1})
    summary = bench.summarize(
        rows, sequential, ["client 0 turn 3, pipelined: timed out"], DEFAULT_PROFILE, 2.0, REPLY,
        failed,
    )  # fmt: skip
    pipe = summary["pipelined"]
    assert (pipe["turns"], pipe["errors"]) == (3, 1)
    assert pipe["client_voice_to_voice_ms"]["p50"] == 1560  # the failure is the slowest
    assert pipe["client_voice_to_voice_ms"]["p99"] == 30_000
    assert pipe["overhead_ms"]["p50"] == 20
    # Against the plain-SDK client's own overhead in the same run (p50 50 ms).
    assert pipe["overhead_ratio_to_plain_client_p50"] == pytest.approx(0.4)
    assert summary["sequential"]["errors"] == 0
    assert summary["ratio_p50"]["vs_sequential_first_audio"] == pytest.approx(1560 / 3710, abs=1e-3)
    assert summary["targets"]["no_errors"] is False
    assert summary["targets"]["overhead_p99_at_most_30_ms"] is False  # the timeout counts
    assert summary["pipelined"]["server_stages_ms_p50"] == {
        "stt_ms": 300,
        "voice_to_voice_ms": 1549,
    }


def test_the_hands_free_rows_time_from_the_end_of_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_module("voice_latency", monkeypatch)
    client = bench_module("hands_free_client", monkeypatch)
    turns = []
    for v2v in (1300.0, 1400.0):
        turn = client.HandsFreeTurn(speech_s=1.66, end_of_speech_at=10.0)
        turn.speech_stopped_at = 10.6
        turn.first_audio_at = 10.0 + v2v / 1000
        turns.append(turn)
    figures = bench.hands_free_summary(turns, 1, 1.66, push_to_talk_p50=1200.0)
    assert figures["voice_to_voice_ms"]["p50"] == pytest.approx(1400)
    assert figures["voice_to_voice_ms"]["errors"] == 1
    assert figures["detector_stop_ms"]["p50"] == pytest.approx(600)
    assert figures["target"]["p50_at_most_ms"] == 500 + 1200 - 300
    assert figures["target"]["met"] is True


def test_the_end_of_speech_is_the_end_of_the_audible_speech(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voice_fsm.testing.speech import silence, voiced

    client = bench_module("hands_free_client", monkeypatch)
    speech = voiced(1.0)
    assert client.trim_speech(speech + silence(0.3)) == speech
    assert client.trim_speech(silence(0.2)) == silence(0.2)  # nothing audible: kept whole


def test_the_speculative_work_comes_from_the_turn_log_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bench_module("voice_latency", monkeypatch)
    lines = [
        {"event": "turn.completed", "mode": "hands_free", "session_id": "s", "turn": 1,
         "speculative": {"requests": 2, "wasted_requests": 1}, "wasted_tokens": 12},
        {"event": "turn.completed", "mode": "hands_free", "session_id": "s", "turn": 2,
         "speculative": {"requests": 1, "wasted_requests": 0}, "wasted_tokens": 0},
        {"event": "turn.completed", "mode": "push_to_talk", "session_id": "s", "turn": 3},
    ]  # fmt: skip
    log = tmp_path / "server.log"
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    facts = bench.server_log_facts(log)
    assert facts.per_turn("hands_free") == {
        "speculative.requests": 1.5,
        "speculative.wasted_requests": 0.5,
        "wasted_tokens": 6.0,
    }
    assert facts.per_turn("push_to_talk") is None  # printed as n/a


def test_the_readme_block_is_drawn_from_the_committed_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = bench_module("readme_figures", monkeypatch)
    assert "No run committed in `docs/bench/bench.json`" in figures.render(tmp_path)
    local = {
        "code": "HEAD (abc)",
        "date": "2026-12-01 06:00 UTC",
        "load_average": {"before": [1.5, 1, 1], "after": [2.5, 1, 1]},
        "question_s": 2.0,
        "llm_model": "default",
        "client_voice_to_voice_ms": {"errors": 1, "p50": 812.0, "p95": 30000.0},
        "hands_free": {"silence_window_ms": 500, "voice_to_voice_ms": {"errors": 0, "p50": 1234}},
    }
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "bench-local.json").write_text(json.dumps(local))
    block = figures.render(tmp_path)
    assert "| default: push-to-talk, end of speech → first reply audio | 812 | 30000 | 1 |" in block
    assert "(500 ms silence window) | 1234 | - | 0 |" in block
    assert "load average 1.5 before, 2.5 after" in block


@pytest.fixture
def piper() -> None:
    try:
        import piper  # noqa: F401
    except ImportError:
        from support.servers import skip_or_fail

        skip_or_fail("Piper (the local extra) is not installed: the hands-free rows need speech")


@pytest.mark.usefixtures("piper")
def test_make_bench_end_to_end_on_the_fakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One turn of each kind through a real server on the fakes: push-to-talk, sequential,
    hands-free, and the two compatible-server rows; the JSON it writes draws the README block."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "voice_latency.py"), "--turns", "1", "--out-dir",
         str(tmp_path)],
        cwd=BENCH, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "bench-1.json").read_text())
    assert summary["pipelined"]["client_voice_to_voice_ms"]["errors"] == 0
    hands_free = summary["hands_free"]
    assert (hands_free["turns"], hands_free["errors"]) == (1, 0)
    # From the end of speech: the detector's silence window is inside it.
    assert hands_free["voice_to_voice_ms"]["p50"] > hands_free["server_voice_to_voice_ms"]["p50"]
    assert hands_free["detector_stop_ms"]["p50"] >= 500
    assert summary["pipelined"]["overhead_ratio_to_plain_client_p50"] is not None
    compatible = {row["name"]: row for row in summary["compatible"]}
    without = compatible["compatible, no Realtime endpoint"]
    assert without["realtime_endpoint"] is False
    assert without["live_transcription_connections"] == 0
    assert compatible["compatible, Realtime endpoint"]["realtime_handshakes_refused"] == 0
    assert "hands-free: end of speech -> 1st audio" in done.stdout
    assert (
        "errors"
        in done.stdout.splitlines()[
            next(
                i
                for i, line in enumerate(done.stdout.splitlines())
                if "p50" in line and "p99" in line
            )
        ]
    )

    figures = bench_module("readme_figures", monkeypatch)
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "bench-1.json").rename(tmp_path / "docs" / "bench" / "bench.json")
    block = figures.render(tmp_path)
    p50 = hands_free["voice_to_voice_ms"]["p50"]
    assert (
        f"| hands-free: end of speech → first reply audio (500 ms silence window) | {p50:.0f} |"
        in (block)
    )
    assert "compatible, no Realtime endpoint, default settings: push-to-talk" in block
