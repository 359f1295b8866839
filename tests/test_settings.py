"""Settings from the environment and .env: nested names, OpenAI fallbacks, validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from voice_fsm.settings import DEFAULT_INSTRUCTIONS, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VOICE_FSM_* or OPENAI_* variable from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith(("VOICE_FSM_", "OPENAI_")):
            monkeypatch.delenv(name)


def load(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def error_locations(err: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str | int, ...]]:
    return [error["loc"] for error in err.value.errors()]


# ---------------------------------------------------------------- defaults and names


def test_defaults() -> None:
    settings = load()

    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.stt.model == "gpt-transcribe"
    assert settings.llm.model == "gpt-6-luna"
    assert settings.llm.reasoning_effort == "none"
    assert settings.llm.instructions == DEFAULT_INSTRUCTIONS
    # What OpenAI's own API speaks with (openai-realtime); the Speech API gets its own.
    assert settings.tts.model == "gpt-realtime-2.1-mini"
    assert settings.tts.model_for("openai-realtime") == "gpt-realtime-2.1-mini"
    assert settings.tts.model_for("openai") == "gpt-4o-mini-tts"
    assert settings.stt.live_model == "gpt-live-transcribe"
    assert {settings.stt.provider, settings.llm.provider, settings.tts.provider} == {"auto"}
    assert settings.openai_api_key is None
    assert settings.secrets() == ()


def test_a_tts_model_that_is_set_is_what_every_provider_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICE_FSM_TTS__MODEL", "kokoro")
    monkeypatch.setenv("VOICE_FSM_TTS__VOICE", "af_heart")
    tts = load().tts
    assert (tts.model_for("openai"), tts.model_for("openai-realtime")) == ("kokoro", "kokoro")
    monkeypatch.delenv("VOICE_FSM_TTS__MODEL")
    assert load().tts.model_for("openai") == "gpt-4o-mini-tts"  # another field set: still unset


@pytest.mark.parametrize("stage", ["STT", "LLM"])
def test_openai_realtime_is_refused_for_text_stages_without_a_key(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"VOICE_FSM_{stage}__PROVIDER", "openai-realtime")
    with pytest.raises(ValidationError) as caught:
        load()
    assert error_locations(caught) == [(stage.lower(), "provider")]
    assert "openai-realtime is a text-to-speech provider only" in str(caught.value)
    monkeypatch.setenv(f"VOICE_FSM_{stage}__PROVIDER", "openai")
    monkeypatch.setenv("VOICE_FSM_TTS__PROVIDER", "openai-realtime")
    assert load().tts.provider == "openai-realtime"


def test_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_LLM__MODEL", "gpt-6-luna-mini")
    monkeypatch.setenv("VOICE_FSM_TTS__PROVIDER", "fake")
    monkeypatch.setenv("VOICE_FSM_STT__BASE_URL", "http://localhost:8001/v1")
    monkeypatch.setenv("VOICE_FSM_LIMITS__MAX_AUDIO_SECONDS", "30")
    monkeypatch.setenv("VOICE_FSM_LOG__LEVEL", "debug")
    monkeypatch.setenv("VOICE_FSM_PORT", "9000")

    settings = load()

    assert settings.llm.model == "gpt-6-luna-mini"
    assert settings.tts.provider == "fake"
    assert settings.stt.base_url == "http://localhost:8001/v1"
    assert settings.limits.max_audio_seconds == 30.0
    assert settings.log.level == "debug"
    assert settings.port == 9000
    # Setting one field of a group keeps the group's other defaults.
    assert settings.llm.reasoning_effort == "none"
    assert settings.tts.voice == "alloy"


def test_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("voice_fsm_tts__voice", "verse")

    assert load().tts.voice == "verse"


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_PORT", "9000")

    assert load(port=9100).port == 9100


# ---------------------------------------------------------------- OpenAI fallbacks


def test_openai_api_key_is_every_stages_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-1234")

    settings = load()

    for stage in (settings.stt, settings.llm, settings.tts):
        assert settings.api_key_for(stage) == "sk-shared-key-1234"


def test_a_stage_key_overrides_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-1234")
    monkeypatch.setenv("VOICE_FSM_LLM__API_KEY", "ollama")

    settings = load()

    assert settings.api_key_for(settings.llm) == "ollama"
    assert settings.api_key_for(settings.stt) == "sk-shared-key-1234"
    assert settings.api_key_for(settings.tts) == "sk-shared-key-1234"


def test_an_empty_stage_key_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-1234")
    monkeypatch.setenv("VOICE_FSM_TTS__API_KEY", "")

    settings = load()

    assert settings.api_key_for(settings.tts) == "sk-shared-key-1234"


def test_no_key_is_none() -> None:
    settings = load()

    assert settings.api_key_for(settings.stt) is None


def test_an_empty_key_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")

    settings = load()

    assert settings.api_key_for(settings.stt) is None


def test_prefixed_key_name_works_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_OPENAI_API_KEY", "sk-prefixed-key-1234")

    settings = load()

    assert settings.api_key_for(settings.llm) == "sk-prefixed-key-1234"


def test_openai_base_url_is_every_stages_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8001/v1/")
    monkeypatch.setenv("VOICE_FSM_LLM__BASE_URL", "http://localhost:11434/v1")

    settings = load()

    assert settings.base_url_for(settings.stt) == "http://localhost:8001/v1"
    assert settings.base_url_for(settings.tts) == "http://localhost:8001/v1"
    assert settings.base_url_for(settings.llm) == "http://localhost:11434/v1"


def test_no_base_url_means_openai() -> None:
    settings = load()

    assert settings.base_url_for(settings.stt) is None


# ---------------------------------------------------------------- .env


def test_reads_a_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "OPENAI_API_KEY=sk-from-dotenv-1234\n"
        "VOICE_FSM_LLM__MODEL=gpt-6-luna-mini\n"
        'VOICE_FSM_LLM__INSTRUCTIONS="Be brief. Be kind."\n'
        "VOICE_FSM_TTS__SPEED=1.25\n"
        "SOMETHING_ELSE=ignored\n",
        encoding="utf-8",
    )

    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]

    assert settings.api_key_for(settings.stt) == "sk-from-dotenv-1234"
    assert settings.llm.model == "gpt-6-luna-mini"
    assert settings.llm.instructions == "Be brief. Be kind."
    assert settings.tts.speed == 1.25


def test_the_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VOICE_FSM_LLM__MODEL=from-dotenv\nVOICE_FSM_PORT=9000\n", encoding="utf-8")
    monkeypatch.setenv("VOICE_FSM_LLM__MODEL", "from-environment")

    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]

    assert settings.llm.model == "from-environment"
    assert settings.port == 9000


def test_a_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    settings = Settings(_env_file=tmp_path / "absent.env")  # type: ignore[call-arg]

    assert settings.llm.model == "gpt-6-luna"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "value", "location"),
    [
        ("VOICE_FSM_PORT", "99999", ("port",)),
        ("VOICE_FSM_PORT", "eighty", ("port",)),
        ("VOICE_FSM_LLM__PROVIDER", "anthropic", ("llm", "provider")),
        ("VOICE_FSM_STT__TIMEOUT", "0", ("stt", "timeout")),
        ("VOICE_FSM_TTS__SPEED", "9", ("tts", "speed")),
        ("VOICE_FSM_TTS__MAX_RETRIES", "6", ("tts", "max_retries")),
        ("VOICE_FSM_LLM__TEMPERATURE", "3", ("llm", "temperature")),
        ("VOICE_FSM_LLM__REASONING_EFFORT", "maximal", ("llm", "reasoning_effort")),
        ("VOICE_FSM_LIMITS__MAX_MESSAGE_BYTES", "0", ("limits", "max_message_bytes")),
        ("VOICE_FSM_LOG__FORMAT", "xml", ("log", "format")),
        ("VOICE_FSM_VAD__PROVIDER", "silero", ("vad", "provider")),
        ("VOICE_FSM_VAD__TURN_DETECTION", "semantic", ("vad", "turn_detection")),
        ("VOICE_FSM_VAD__EAGERNESS", "eager", ("vad", "eagerness")),
    ],
)
def test_bad_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, location: tuple[str, ...]
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as err:
        load()

    assert error_locations(err) == [location]


@pytest.mark.parametrize(
    "value", ["localhost:11434/v1", "ftp://example.com/v1", "//example.com/v1", "api.openai.com"]
)
def test_base_url_needs_a_scheme(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("VOICE_FSM_STT__BASE_URL", value)

    with pytest.raises(ValidationError, match=r"http:// or https://") as err:
        load()

    assert error_locations(err) == [("stt", "base_url")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://localhost:11434/v1", "http://localhost:11434/v1"),
        ("https://api.example.com/v1/", "https://api.example.com/v1"),
        ("", None),
    ],
)
def test_base_url_is_normalised(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("VOICE_FSM_TTS__BASE_URL", value)

    assert load().tts.base_url == expected


def test_empty_reasoning_effort_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_LLM__REASONING_EFFORT", "")

    assert load().llm.reasoning_effort is None


def test_empty_reasoning_effort_in_dotenv_means_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VOICE_FSM_LLM__REASONING_EFFORT=\n", encoding="utf-8")

    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]

    assert settings.llm.reasoning_effort is None


def test_reasoning_effort_can_be_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_LLM__REASONING_EFFORT", "low")

    assert load().llm.reasoning_effort == "low"


def test_hands_free_detection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    vad = load().vad
    assert (vad.provider, vad.turn_detection, vad.eagerness) == ("auto", "server_vad", "auto")
    # Unset padding: each detector's own default.
    assert (vad.pad_ms("local"), vad.pad_ms("openai-realtime")) == (30, 300)

    monkeypatch.setenv("VOICE_FSM_VAD__PROVIDER", "openai-realtime")
    monkeypatch.setenv("VOICE_FSM_VAD__TURN_DETECTION", "semantic_vad")
    monkeypatch.setenv("VOICE_FSM_VAD__EAGERNESS", "low")
    monkeypatch.setenv("VOICE_FSM_VAD__SPEECH_PAD_MS", "120")
    vad = load().vad
    assert (vad.provider, vad.turn_detection, vad.eagerness) == (
        "openai-realtime",
        "semantic_vad",
        "low",
    )
    assert (vad.pad_ms("local"), vad.pad_ms("openai-realtime")) == (120, 120)


# ---------------------------------------------------------------- secrets


def test_secrets_lists_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-1234")
    monkeypatch.setenv("VOICE_FSM_STT__API_KEY", "stt-key-5678")
    monkeypatch.setenv("VOICE_FSM_TTS__API_KEY", "")

    secrets = load().secrets()

    assert set(secrets) == {"sk-shared-key-1234", "stt-key-5678"}
    assert "" not in secrets


def test_keys_never_show_in_repr_or_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-1234")
    monkeypatch.setenv("VOICE_FSM_LLM__API_KEY", "llm-key-5678")

    settings = load()

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "sk-shared-key-1234" not in text
        assert "llm-key-5678" not in text


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_STT__LANGUAGE", "")
    monkeypatch.setenv("VOICE_FSM_LLM__TEMPERATURE", "")
    monkeypatch.setenv("VOICE_FSM_TTS__INSTRUCTIONS", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.stt.language is None
    assert settings.llm.temperature is None
    assert settings.tts.instructions is None
    assert settings.openai_base_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VOICE_FSM_STT__LANGUAGE", "e"),
        ("OPENAI_BASE_URL", "localhost:11434/v1"),
        ("VOICE_FSM_LLM__INSTRUCTIONS", ""),
    ],
)
def test_values_a_session_could_not_use_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_misspelt_names_are_found() -> None:
    from voice_fsm.settings import setting_names, unknown_setting_names

    names = setting_names()
    assert {"VOICE_FSM_LLM__MODEL", "VOICE_FSM_LOCAL__STT_MODEL", "VOICE_FSM_PORT"} <= names
    found = unknown_setting_names(
        ["VOICE_FSM_LLM__MODLE", "VOICE_FSM_LLM__MODEL", "voice_fsm_port", "PATH", "VOICE_FSM_TTS"]
    )
    assert found == ["VOICE_FSM_LLM__MODLE"]


def test_mcp_servers_are_a_json_list_each_with_one_transport_and_a_safe_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voice_fsm.settings import McpServer

    servers = '[{"command": ["python", "-m", "weather"], "env": {"KEY": "s3cret"}},'
    servers += ' {"url": "https://user:tok3n@tools.example.com/mcp?key=s3cret"}]'
    monkeypatch.setenv("VOICE_FSM_TOOLS__MCP_SERVERS", servers)
    stdio, http = Settings(_env_file=None).tools.mcp_servers  # type: ignore[call-arg]
    assert stdio.command == ["python", "-m", "weather"]
    assert stdio.label == "weather"
    assert http.label == "tools.example.com"  # no credentials, path or query in the logs
    with pytest.raises(ValueError, match="either"):
        McpServer(command=["x"], url="https://h/mcp")
    with pytest.raises(ValueError, match="either"):
        McpServer()
    monkeypatch.setenv("VOICE_FSM_TOOLS__MCP_SERVERS", "")
    assert Settings(_env_file=None).tools.mcp_servers == []  # type: ignore[call-arg]


def test_speech_to_speech_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load()
    assert defaults.pipeline == "cascade"
    assert (defaults.s2s.provider, defaults.s2s.model) == ("auto", "gpt-realtime-2.1-mini")
    assert defaults.s2s.transcription_model == "gpt-live-transcribe"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared")
    monkeypatch.setenv("VOICE_FSM_PIPELINE", "speech-to-speech")
    monkeypatch.setenv("VOICE_FSM_S2S__MODEL", "gpt-realtime")
    monkeypatch.setenv("VOICE_FSM_S2S__API_KEY", "sk-speech-only")
    monkeypatch.setenv("VOICE_FSM_S2S__TRANSCRIPTION_MODEL", "")
    settings = load()
    assert (settings.pipeline, settings.s2s.model) == ("speech-to-speech", "gpt-realtime")
    assert settings.s2s.transcription_model is None  # empty: no input transcription
    assert settings.api_key_for(settings.s2s) == "sk-speech-only"
    assert "sk-speech-only" in settings.secrets()  # scrubbed from errors and logs
