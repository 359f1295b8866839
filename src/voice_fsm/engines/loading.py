"""The engines this process serves: the embedded Whisper, llama.cpp and Piper, loaded once
(with their warm-ups) by the same builders as `serve`'s provider ``local``, and the model names
each answers to.

A model answers to its own id (what `/v1/models` lists), to the name the settings chose it by
(`VOICE_FSM_LOCAL__LLM_MODEL=smollm2-135m`), and to the model the same settings give the
stage's provider ``openai`` (`VOICE_FSM_LLM__MODEL`, the Speech API's default, ...): a `serve`
reading the same settings asks for that name and needs no other. Any other name is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from voice_fsm.engines.api_errors import unknown_model

if TYPE_CHECKING:
    from voice_fsm.adapters.base import LanguageModel, SpeechToText, TextToSpeech
    from voice_fsm.settings import Settings

EngineName = Literal["stt", "llm", "tts"]
ENGINES: tuple[EngineName, ...] = ("stt", "llm", "tts")


@dataclass(frozen=True, slots=True)
class ServedModel:
    engine: EngineName
    id: str
    aliases: frozenset[str]

    def answers_to(self, name: str) -> bool:
        return name == self.id or name in self.aliases


@dataclass(frozen=True, slots=True)
class Engines:
    """The loaded engines and the models they serve."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    models: tuple[ServedModel, ...]

    def check_model(self, engine: EngineName, name: str) -> ServedModel:
        """The model of `engine` called `name`; raises the API's 404 for any other name."""
        for model in self.models:
            if model.engine == engine and model.answers_to(name):
                return model
        raise unknown_model(name)

    async def aclose(self) -> None:
        for adapter in (self.stt, self.llm, self.tts):
            await adapter.aclose()


def load_engines(settings: Settings) -> Engines:
    """Load and warm up the three engines (blocking: seconds, most of it the language model).
    Raises `ProviderError` for a model that cannot be loaded, `LocalModelMissing` for one
    that is not installed."""
    from voice_fsm.adapters.entry import Build
    from voice_fsm.adapters.local import builders

    build = Build(settings=settings)
    stt = builders.speech_to_text(build)
    llm = builders.language_model(build)
    tts = builders.text_to_speech(build)
    local = settings.local
    models = (
        ServedModel("stt", stt.model, _names(local.stt_model, settings.stt.model)),
        ServedModel("llm", llm.model, _names(local.llm_model, settings.llm.model)),
        ServedModel(
            "tts",
            tts.model.replace(" ", "-"),  # "piper en_US-joe-medium": no spaces in an id
            _names(tts.model, local.tts_voice, settings.tts.model_for("openai")),
        ),
    )
    return Engines(stt=stt, llm=llm, tts=tts, models=models)


def _names(*names: str | None) -> frozenset[str]:
    return frozenset(name for name in names if name)


def loaded(state: object) -> Engines:
    """The engines of an app's `state`; the API's 503 while they are still loading."""
    engines = getattr(state, "engines", None)
    if engines is None:
        from voice_fsm.engines.api_errors import SERVER_ERROR, ApiError

        raise ApiError(
            503,
            "The engines are still loading their models. Try again shortly.",
            kind=SERVER_ERROR,
            code="engines_loading",
            headers={"Retry-After": "2"},
        )
    assert isinstance(engines, Engines)
    return engines
