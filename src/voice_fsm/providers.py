"""Choosing and building each stage's adapter from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from voice_fsm.adapters.base import LanguageModel, SpeechToText, TextToSpeech
from voice_fsm.settings import ResolvedProvider, Settings, StageSettings

STAGES = ("stt", "llm", "tts")


class ConfigError(Exception):
    """The configuration cannot give a working pipeline; the message says what to set."""


@dataclass
class Pipeline:
    """One adapter per stage, shared by every session of the process."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech

    def describe(self) -> dict[str, dict[str, str]]:
        return {
            name: {"provider": adapter.provider, "model": adapter.model}
            for name, adapter in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts))
        }

    async def aclose(self) -> None:
        for adapter in (self.stt, self.llm, self.tts):
            await adapter.aclose()


def resolve_provider(settings: Settings, name: str) -> ResolvedProvider:
    stage: StageSettings = getattr(settings, name)
    no_key = settings.api_key_for(stage) is None and settings.base_url_for(stage) is None
    if stage.provider == "openai" and no_key:
        raise ConfigError(
            f"VOICE_FSM_{name.upper()}__PROVIDER=openai needs OPENAI_API_KEY "
            f"(or VOICE_FSM_{name.upper()}__API_KEY)."
        )
    if stage.provider != "auto":
        return stage.provider
    if settings.api_key_for(stage) is not None:
        return "openai"
    raise ConfigError(
        f"No provider for {name}: set OPENAI_API_KEY (in the environment or in .env) to use "
        "OpenAI, point an OpenAI-compatible server at it with "
        f"VOICE_FSM_{name.upper()}__BASE_URL and OPENAI_API_KEY (any value), or set "
        f"VOICE_FSM_{name.upper()}__PROVIDER=fake for canned answers."
    )


def resolve_providers(settings: Settings) -> dict[str, ResolvedProvider]:
    return {name: resolve_provider(settings, name) for name in STAGES}


def build_pipeline(settings: Settings) -> Pipeline:
    providers = resolve_providers(settings)
    # Imported here so a fake-only set-up does not pay for the OpenAI SDK's import.
    from voice_fsm.adapters.fake import fakes_from_settings

    fake_stt, fake_llm, fake_tts = fakes_from_settings(settings.fake)
    secrets = settings.secrets()

    stt: SpeechToText = fake_stt
    llm: LanguageModel = fake_llm
    tts: TextToSpeech = fake_tts
    if "openai" in providers.values():
        from voice_fsm.adapters.openai_client import make_openai_client
        from voice_fsm.adapters.openai_llm import OpenAILanguageModel
        from voice_fsm.adapters.openai_stt import OpenAISpeechToText
        from voice_fsm.adapters.openai_tts import OpenAITextToSpeech

        if providers["stt"] == "openai":
            client = make_openai_client(settings, settings.stt)
            stt = OpenAISpeechToText(settings.stt, client, secrets)
        if providers["llm"] == "openai":
            client = make_openai_client(settings, settings.llm)
            llm = OpenAILanguageModel(settings.llm, client, secrets)
        if providers["tts"] == "openai":
            client = make_openai_client(settings, settings.tts)
            tts = OpenAITextToSpeech(settings.tts, client, secrets)
    return Pipeline(stt=stt, llm=llm, tts=tts)
