"""OpenAI's announced shutdowns and the startup warning for configured models."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from voice_fsm.model_lifecycle import (
    RETIREMENTS,
    Shutdown,
    retirement_for,
    scheduled_shutdowns,
    warn_scheduled_shutdowns,
)
from voice_fsm.settings import LlmSettings, Settings, SttSettings, TtsSettings

ALL_OPENAI = {"stt": "openai", "llm": "openai", "tts": "openai"}
TODAY = date(2026, 11, 20)


def settings(stt: str, llm: str, tts: str, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        stt=SttSettings(model=stt),
        llm=LlmSettings(model=llm),
        tts=TtsSettings(model=tts),
        **extra,
    )


def test_table_matches_the_announcements() -> None:
    speech = date(2027, 1, 6)
    chat = date(2027, 1, 14)
    transcription = date(2027, 2, 26)
    assert {model: r.shutdown_date for model, r in RETIREMENTS.items()} == {
        "gpt-4o-mini-tts": speech,
        "tts-1": speech,
        "tts-1-hd": speech,
        "gpt-4.1-mini": chat,
        "gpt-4.1": chat,
        "gpt-4o": chat,
        "gpt-4o-mini": chat,
        "gpt-4o-mini-transcribe": transcription,
        "gpt-4o-transcribe": transcription,
        "whisper-1": transcription,
    }
    assert "gpt-realtime-2.1-mini" in RETIREMENTS["tts-1"].replacement
    assert RETIREMENTS["gpt-4o"].replacement == "gpt-6-luna"
    assert "gpt-transcribe" in RETIREMENTS["whisper-1"].replacement
    assert "gpt-live-transcribe" in RETIREMENTS["whisper-1"].replacement


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("gpt-4o-mini", True),
        ("gpt-4o-mini-2024-07-18", True),
        ("gpt-4o-mini-tts-2025-12-15", True),
        ("GPT-4.1", True),
        ("gpt-4o-mini-realtime-preview", False),
        ("gpt-6-luna", False),
        ("gpt-transcribe", False),
        ("gpt-4o-2024", False),
    ],
)
def test_dated_snapshots_share_their_model_s_shutdown(model: str, listed: bool) -> None:
    assert (retirement_for(model) is not None) is listed


def test_defaults_warn_only_for_the_speech_api() -> None:
    found = scheduled_shutdowns(Settings(_env_file=None), ALL_OPENAI, today=TODAY)
    assert found == [
        Shutdown(
            stage="tts",
            model="gpt-4o-mini-tts",
            shutdown_date=date(2027, 1, 6),
            replacement="gpt-realtime-2.1-mini through the Realtime API",
            days_left=47,
        )
    ]


def test_every_listed_stage_in_stage_order() -> None:
    config = settings("whisper-1", "gpt-4.1-mini", "tts-1-hd")
    found = scheduled_shutdowns(config, ALL_OPENAI, today=date(2027, 1, 10))
    assert [(s.stage, s.model, s.days_left) for s in found] == [
        ("stt", "whisper-1", 47),
        ("llm", "gpt-4.1-mini", 4),
        ("tts", "tts-1-hd", -4),
    ]


def test_only_stages_served_by_openai_count() -> None:
    config = settings("whisper-1", "gpt-4o", "tts-1")
    found = scheduled_shutdowns(config, {"stt": "fake", "llm": "openai"}, today=TODAY)
    assert [s.stage for s in found] == ["llm"]


def test_compatible_servers_are_not_retired_with_openai() -> None:
    config = Settings(
        _env_file=None,
        openai_base_url="http://localhost:8000/v1",
        stt=SttSettings(model="whisper-1"),
        llm=LlmSettings(model="gpt-4o", base_url="https://api.openai.com/v1"),
        tts=TtsSettings(model="tts-1"),
    )
    found = scheduled_shutdowns(config, ALL_OPENAI, today=TODAY)
    assert [s.stage for s in found] == ["llm"]


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.warnings.append((event, kw))


def test_warns_once_per_listed_model() -> None:
    log = RecordingLog()
    config = settings("gpt-4o-transcribe", "gpt-6-luna", "gpt-4o-mini-tts")
    warn_scheduled_shutdowns(config, ALL_OPENAI, log, today=TODAY)
    assert log.warnings == [
        (
            "model.shutdown_scheduled",
            {
                "stage": "stt",
                "model": "gpt-4o-transcribe",
                "shutdown_date": "2027-02-26",
                "replacement": "gpt-transcribe (files) or gpt-live-transcribe (Realtime)",
                "days_left": 98,
            },
        ),
        (
            "model.shutdown_scheduled",
            {
                "stage": "tts",
                "model": "gpt-4o-mini-tts",
                "shutdown_date": "2027-01-06",
                "replacement": "gpt-realtime-2.1-mini through the Realtime API",
                "days_left": 47,
            },
        ),
    ]


def test_works_with_a_structlog_logger() -> None:
    config = settings("gpt-transcribe", "gpt-4.1", "kokoro")
    with capture_logs() as logs:
        warn_scheduled_shutdowns(config, ALL_OPENAI, structlog.get_logger(), today=TODAY)
    assert logs == [
        {
            "event": "model.shutdown_scheduled",
            "log_level": "warning",
            "stage": "llm",
            "model": "gpt-4.1",
            "shutdown_date": "2027-01-14",
            "replacement": "gpt-6-luna",
            "days_left": 55,
        }
    ]


def test_nothing_to_warn_about() -> None:
    log = RecordingLog()
    config = settings("gpt-transcribe", "gpt-6-luna", "kokoro")
    warn_scheduled_shutdowns(config, ALL_OPENAI, log, today=TODAY)
    assert log.warnings == []
