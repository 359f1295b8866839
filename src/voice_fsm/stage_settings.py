"""The settings of each stage of a turn: speech-to-text, the language model, text-to-speech,
and hands-free turn detection."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from voice_fsm.settings_types import SettingsGroup, check_base_url


def _provider_name(*stages: str, also: tuple[str, ...] = ()) -> AfterValidator:
    """Accepts ``auto``, a provider in the tables of `stages` (`voice_fsm.adapters.registry`)
    and `also`: a provider added to a table needs no edit here."""

    def check(value: str) -> str:
        # Imported when a value is checked: the tables import modules that import the settings.
        from voice_fsm.adapters.registry import provider_names

        allowed = ["auto", *provider_names(*stages), *also]
        if value not in allowed:
            quoted = [repr(name) for name in allowed]
            expected = ", ".join(quoted[:-1]) + " or " + quoted[-1]
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return value

    return AfterValidator(check)


Provider = Annotated[str, _provider_name("tts", "stt", "llm")]
"""Any stage's provider (text-to-speech's table first: it names them all); a text stage refuses
openai-realtime itself, and `providers` refuses a name not in the stage's own table."""

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your answers are spoken aloud, so answer in one to three "
    "short, plain sentences, the way a person talks. No lists, markdown, code or emoji. "
    "If you did not understand the question, say so briefly."
)


REALTIME_TTS_MODEL = "gpt-realtime-2.1-mini"
"""What OpenAI's own API speaks with (provider openai-realtime, the default with a key)."""
SPEECH_API_MODEL = "gpt-4o-mini-tts"
"""What the Speech API (provider openai) gets when no model is set."""
_PROVIDERS = "auto (OpenAI with a key, else local), openai (or any OpenAI-compatible server), "


class StageSettings(SettingsGroup):
    """What every stage has: a provider and how to reach it."""

    provider: Provider = Field(
        default="auto", description=_PROVIDERS + "local (the embedded offline engine) or fake"
    )
    model: str
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL ending in /v1 for this stage; unset: "
        "OPENAI_BASE_URL",
        examples=["http://localhost:11434/v1"],
    )
    api_key: SecretStr | None = Field(
        default=None, description="API key for this stage; unset: OPENAI_API_KEY"
    )
    timeout: float = Field(
        default=10.0, gt=0, description="seconds to connect and between streamed chunks"
    )
    max_retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="retries of a failed request (timeout, 429, 5xx, connection error)",
    )

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str | None) -> str | None:
        return check_base_url(value)


def _text_stage_provider(value: str, stage: str) -> str:
    if value == "openai-realtime":
        raise ValueError(
            f"openai-realtime is a text-to-speech provider only; for {stage} use openai "
            "(OpenAI or a compatible server), local, fake or auto"
        )
    return value


class SttSettings(StageSettings):
    provider: Provider = Field(
        default="auto",
        description=_PROVIDERS + "local (the embedded offline engine) or fake; OpenAI's own "
        "API transcribes live through Realtime (see live)",
    )
    model: str = Field(
        default="gpt-transcribe",
        description="transcription model for a completed recording: with live off, on a "
        "compatible server without Realtime, or when a live session fails",
    )
    language: str | None = Field(
        default=None,
        min_length=2,
        max_length=16,
        description="ISO-639-1 language hint; unset: the model detects the language",
        examples=["en"],
    )
    live: Literal["auto"] | bool = Field(
        default="auto",
        description="transcribe while the user talks, through the Realtime API; auto: on for "
        "OpenAI's own API, tried once on a compatible server at a base URL and off for good "
        "(one warning) if it has no Realtime transcription endpoint",
        examples=[True],
    )
    live_model: str = Field(
        default="gpt-live-transcribe",
        description="transcription model while the user talks (live on: OpenAI's own API, "
        "by default)",
    )

    @field_validator("provider")
    @classmethod
    def _not_realtime(cls, value: str) -> str:
        return _text_stage_provider(value, "speech-to-text")


class LlmSettings(StageSettings):
    model: str = Field(default="gpt-6-luna", description="chat model (OpenAI or compatible)")
    # gpt-6-luna reasons by default; a voice turn cannot wait for it, so ask for the least.
    reasoning_effort: Literal["none", "low", "medium", "high", "xhigh", "max"] | None = Field(
        default="none",
        description="how long the model may reason; empty leaves it out, for servers that "
        "reject it",
    )
    instructions: str = Field(
        default=DEFAULT_INSTRUCTIONS, min_length=1, max_length=8000, description="system prompt"
    )
    max_output_tokens: int = Field(default=300, gt=0, description="longest reply, in tokens")
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="sampling temperature (0-2); unset: the model's default",
        examples=[0.7],
    )
    max_history_turns: int = Field(
        default=20, ge=0, description="earlier exchanges the model sees (0: each turn alone)"
    )

    @field_validator("provider")
    @classmethod
    def _not_realtime(cls, value: str) -> str:
        return _text_stage_provider(value, "the language model")


class TtsSettings(StageSettings):
    provider: Provider = Field(
        default="auto",
        description="auto (with a key: openai-realtime for OpenAI's own API, openai for a "
        "compatible server; local without a key), openai-realtime (speech through a Realtime "
        "session), openai (the Speech API, or any compatible server), local or fake",
    )
    model: str = Field(
        default=REALTIME_TTS_MODEL,
        description=f"speech model; unset, the Speech API (provider openai) gets "
        f"{SPEECH_API_MODEL} (OpenAI shuts it down on 2027-01-06), and with openai-realtime "
        f"a Speech API name means {REALTIME_TTS_MODEL}",
    )
    voice: str = Field(
        default="alloy",
        description="OpenAI's voice (providers openai and openai-realtime only; the local "
        "engine's is VOICE_FSM_LOCAL__TTS_VOICE); a client may change it per session",
    )
    speed: float = Field(
        default=1.0, ge=0.25, le=4.0, description="speaking speed (0.25-4; Realtime: up to 1.5)"
    )
    instructions: str | None = Field(
        default=None,
        description="how to speak (tone, pace); OpenAI only",
        examples=["Speak warmly and briskly."],
    )

    def model_for(self, provider: str) -> str:
        """The model `provider` is asked for: the Speech API's own when none was set."""
        if provider == "openai" and "model" not in self.model_fields_set:
            return SPEECH_API_MODEL
        return self.model


VadProvider = Annotated[str, _provider_name("vad", also=("off",))]
SpeechProvider = Annotated[str, _provider_name("s2s", also=("off",))]
S2S_MODEL = "gpt-realtime-2.1-mini"
"""The Realtime model of speech-to-speech mode when none is set."""


class SpeechToSpeechSettings(StageSettings):
    """Speech-to-speech mode: a Realtime model hears the user's audio and answers aloud (no
    transcription, language model and speech stages). The session's machine still decides the
    turns: each is committed when the user stops, and its response asked for then. The model
    speaks with the session's voice (VOICE_FSM_TTS__VOICE, or the client's)."""

    provider: SpeechProvider = Field(
        default="auto",
        description="auto: openai-realtime with a key (or a base URL), else none, and none "
        "when OPENAI_API_KEY is the key of compatible servers every cascade stage points at; "
        "openai-realtime (OpenAI's Realtime API, or a compatible server); off: cascade only",
    )
    model: str = Field(default=S2S_MODEL, description="Realtime model that hears and speaks")
    transcription_model: str | None = Field(
        default="gpt-live-transcribe",
        description="model that transcribes the user's speech for the transcript events and "
        "the history; empty: none",
    )


class VadSettings(SettingsGroup):
    """Turn detection in hands-free mode: the local Silero detector, or the server VAD of
    OpenAI's Realtime transcription session (``threshold``, ``min_silence_ms`` and
    ``speech_pad_ms`` become its ``threshold``, ``silence_duration_ms`` and
    ``prefix_padding_ms``)."""

    provider: VadProvider = Field(
        default="auto",
        description="auto: local when installed, else openai-realtime when speech-to-text "
        "is OpenAI's Realtime API, else none; off: push-to-talk only",
    )
    turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        default="server_vad", description="openai-realtime: the Realtime session's detector"
    )
    eagerness: Literal["auto", "low", "medium", "high"] = Field(
        default="auto", description="semantic_vad: how soon a pause ends the turn"
    )
    threshold: float = Field(default=0.5, gt=0, lt=1, description="speech probability to start")
    min_silence_ms: int = Field(default=500, ge=0, description="silence that ends a turn")
    min_speech_ms: int = Field(
        default=250, ge=0, description="local: shortest speech that is a turn"
    )
    speech_pad_ms: int | None = Field(
        default=None,
        ge=0,
        description="audio kept before the speech; unset: 30 local, 300 (OpenAI's) Realtime",
    )

    preemptive_reply: bool = Field(
        default=True,
        description="start the reply on the live transcript when the user pauses (the local "
        "detector's first silent frames) or releases the button, its audio held until the "
        "final transcript confirms it; a wrong guess is cancelled and counted "
        "(wasted_replies)",
    )

    def pad_ms(self, provider: Literal["local", "openai-realtime"]) -> int:
        """`speech_pad_ms`, or the detector's own default."""
        if self.speech_pad_ms is not None:
            return self.speech_pad_ms
        return 30 if provider == "local" else 300
