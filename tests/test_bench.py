"""The benchmark's arithmetic: the latency profile, the critical path, the percentiles. No
servers: the benchmark itself is `make bench`."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
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


def test_the_first_piece_is_cut_when_the_next_token_shows_the_sentence_ended() -> None:
    assert "".join(words(REPLY)) == REPLY  # the fake streams exactly these tokens
    # "Paris." is the 6th token; the splitter needs the white space the 7th token starts with.
    assert first_piece(REPLY) == ("The capital of France is Paris.", 7)


def test_a_one_sentence_reply_is_spoken_after_its_last_token() -> None:
    assert first_piece("The capital is Paris.") == ("The capital is Paris.", 4)


def test_a_long_first_clause_is_a_piece_of_its_own() -> None:
    piece, tokens = first_piece("Well, let me think about that, it is Paris.")
    assert (piece, tokens) == ("Well, let me think about that,", 7)


def test_critical_path_sums_the_providers_stages() -> None:
    live = pipelined_stages(DEFAULT_PROFILE, 2.0, REPLY, live=True)
    assert live == pytest.approx({"stt": 0.3, "llm_first_piece": 0.64, "tts_first_audio": 0.6})
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, True) == pytest.approx(1.54)
    assert critical_path_s(DEFAULT_PROFILE, 2.0, REPLY, False) == pytest.approx(2.94)


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
