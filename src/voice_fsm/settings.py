"""Settings, read from the environment and `.env`.

Names take the prefix ``VOICE_FSM_`` and ``__`` for nesting (``VOICE_FSM_LLM__MODEL``). The
standard ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are read too, as the fallback for every
stage's key and base_url.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Provider = Literal["auto", "openai", "openai-realtime", "local", "fake"]
ResolvedProvider = Literal["openai", "openai-realtime", "local", "fake"]

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your answers are spoken aloud, so answer in one to three "
    "short, plain sentences, the way a person talks. No lists, markdown, code or emoji. "
    "If you did not understand the question, say so briefly."
)


def _allows_none(annotation: object) -> bool:
    return type(None) in get_args(annotation)


def _check_base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class _Group(BaseModel):
    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # `NAME=` in .env or the environment means "not set" for a field that may be unset.
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and _allows_none(field.annotation):
            return None
        return value


REALTIME_TTS_MODEL = "gpt-realtime-2.1-mini"
"""What OpenAI's own API speaks with (provider openai-realtime, the default with a key)."""
SPEECH_API_MODEL = "gpt-4o-mini-tts"
"""What the Speech API (provider openai) gets when no model is set."""
_PROVIDERS = "auto (OpenAI with a key, else local), openai (or any OpenAI-compatible server), "


class StageSettings(_Group):
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
        return _check_base_url(value)


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
        description="transcription model for a completed recording: with live off (a "
        "compatible server, by default) or when a live session fails",
    )
    language: str | None = Field(
        default=None,
        min_length=2,
        max_length=16,
        description="ISO-639-1 language hint; unset: the model detects the language",
        examples=["en"],
    )
    live: bool | None = Field(
        default=None,
        description="transcribe while the user talks, through the Realtime API; unset: on "
        "for OpenAI's own API, off for a compatible server at a base URL",
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


class LocalSettings(_Group):
    """The embedded offline engines (provider `local`)."""

    stt_model: str = Field(
        default="tiny.en",
        description="faster-whisper model: tiny.en (packaged), a model directory, or a hub name",
    )
    stt_beam_size: int = Field(
        default=1, ge=1, le=10, description="beam size of the local transcription (1 is fastest)"
    )
    llm_model: str = Field(
        default="qwen2.5-coder-0.5b",
        description="qwen2.5-coder-0.5b (Qwen2.5-Coder-0.5B-Instruct, verified), smollm2-135m "
        "(SmolLM2-135M-Instruct: faster, often wrong), or a path to a GGUF file",
    )
    model_cache: Path | None = Field(
        default=None,
        description="where the Qwen GGUF is assembled; unset: $XDG_CACHE_HOME/voice-fsm/models "
        "or ~/.cache/voice-fsm/models",
    )
    llm_context: int = Field(
        default=2048, ge=256, description="context window of the local language model, in tokens"
    )
    llm_soft_max_tokens: int = Field(
        default=48, gt=0, description="past this many tokens the reply stops at a sentence end"
    )
    llm_max_tokens: int = Field(
        default=96, gt=0, description="longest reply, in tokens; an unfinished sentence is dropped"
    )
    llm_temperature: float = Field(default=0.0, ge=0, le=2, description="0: greedy decoding")
    llm_frequency_penalty: float = Field(
        default=0.5,
        ge=-2,
        le=2,
        description="against the reply's repeated words (loops in lists); digits are exempt",
    )
    llm_number_word_bias: float = Field(
        default=-5.0,
        ge=-100,
        le=0,
        description="logit bias against spelled-out numbers (two to hundred), so the model "
        "writes digits: a small model knows counts better in digits; 0: off",
    )
    tts_voice: str | None = Field(
        default=None, description="Piper voice .onnx (its .onnx.json beside it); unset: joe-us"
    )
    threads: int = Field(default=2, ge=1, description="CPU threads per engine")


VadProvider = Literal["auto", "local", "openai-realtime", "off"]


class VadSettings(_Group):
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

    def pad_ms(self, provider: Literal["local", "openai-realtime"]) -> int:
        """`speech_pad_ms`, or the detector's own default."""
        if self.speech_pad_ms is not None:
            return self.speech_pad_ms
        return 30 if provider == "local" else 300


def _split_list(value: object) -> object:
    """A list setting from the environment: JSON (`["a","b"]`) or comma-separated (`a,b`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)]


class ServerSettings(_Group):
    """Who may reach the server, and how it stops."""

    allowed_origins: StrList = Field(
        default_factory=list,
        description="browser origins allowed besides the server's own and loopback "
        "(https://app.example.com); * allows any",
    )
    allowed_hosts: StrList = Field(
        default_factory=list,
        description="Host names allowed besides loopback and the bound address; * allows any",
    )
    trusted_proxies: StrList = Field(
        default_factory=list,
        description="addresses or networks of proxies whose X-Forwarded-For is believed",
    )
    drain_s: float = Field(
        default=10.0, ge=0, description="on SIGTERM, how long turns in flight may run on"
    )


class AuthSettings(_Group):
    """Credentials for /ws and the HTTP routes (health checks excepted)."""

    api_keys: SecretList = Field(
        default_factory=list, description="secrets a program sends as Authorization: Bearer"
    )
    token_ttl_s: float = Field(
        default=60.0, gt=0, le=3600, description="lifetime of a minted client token"
    )
    page_tokens: bool = Field(
        default=False,
        description="the page served here may get a client token without a key "
        "(for a server behind your own sign-in)",
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if len(key.get_secret_value()) < 16:
                raise ValueError("each key must be at least 16 characters")
        return keys

    def secret_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.api_keys]


class LimitSettings(_Group):
    min_audio_ms: int = Field(
        default=100, ge=0, description="shortest recording accepted, in ms; less is no-audio"
    )
    max_audio_seconds: float = Field(
        default=60.0, gt=0, description="longest recording accepted; more is audio-too-long"
    )
    max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest WebSocket message; a larger one closes the connection (1009)",
    )
    max_text_bytes: int = Field(
        default=64 * 1024, gt=0, description="largest JSON text message (invalid-message)"
    )
    max_sessions: int = Field(default=1000, gt=0, description="sessions at once, in all")
    max_sessions_per_client: int = Field(
        default=50, gt=0, description="sessions at once from one client address"
    )
    inbox_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=64 * 1024,
        description="a session's unhandled messages, in bytes, before its socket is not read",
    )
    messages_per_s: float = Field(
        default=400.0, gt=0, description="messages a connection may send per second"
    )
    errors_per_s: float = Field(
        default=5.0, gt=0, description="error events per second for bad messages; more dropped"
    )
    idle_timeout_s: float = Field(
        default=300.0, gt=0, description="a session with no message this long is closed"
    )
    max_session_s: float = Field(default=3600.0, gt=0, description="longest session")
    send_timeout_s: float = Field(
        default=10.0, gt=0, description="a send that cannot complete this soon aborts"
    )


class MetricsSettings(_Group):
    """Prometheus metrics at /metrics."""

    enabled: bool = Field(default=True, description="record metrics and serve /metrics")
    public: bool = Field(
        default=False,
        description="/metrics answers without a key even when VOICE_FSM_AUTH__API_KEYS is set",
    )


class DashboardSettings(_Group):
    """The built-in dashboard at /dashboard."""

    turns: int = Field(
        default=500, ge=1, le=100_000, description="finished turns the dashboard keeps in memory"
    )


class FakeSettings(_Group):
    """Behaviour of the `fake` providers (tests, demos and benchmarks)."""

    transcript: str = Field(
        default="What is the capital of France?", description="what the fake speech-to-text hears"
    )
    reply: str = Field(
        default="The capital of France is Paris.", description="what the fake language model says"
    )
    stt_delay: float = Field(default=0.05, ge=0, description="seconds the transcription takes")
    llm_first_token_delay: float = Field(
        default=0.05, ge=0, description="seconds before the first token"
    )
    llm_token_delay: float = Field(default=0.01, ge=0, description="seconds between tokens")
    tts_first_audio_delay: float = Field(
        default=0.05, ge=0, description="seconds before the first audio"
    )
    tts_chunk_delay: float = Field(default=0.0, ge=0, description="seconds between audio chunks")


class LogSettings(_Group):
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="auto (console on a terminal, JSON lines otherwise), json or console",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICE_FSM_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    host: str = Field(default="127.0.0.1", description="address `voice-fsm serve` listens on")
    port: int = Field(default=8000, ge=0, le=65535, description="port `voice-fsm serve` listens on")
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "VOICE_FSM_OPENAI_API_KEY"),
        description="OpenAI API key: every stage's key unless it has its own (any non-empty "
        "value for a local compatible server); unset: the embedded offline engines",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "VOICE_FSM_OPENAI_BASE_URL"),
        description="OpenAI-compatible base URL ending in /v1: every stage's unless it has its "
        "own; unset: OpenAI's API",
        examples=["https://api.openai.com/v1"],
    )
    stt: SttSettings = SttSettings()
    llm: LlmSettings = LlmSettings()
    tts: TtsSettings = TtsSettings()
    local: LocalSettings = LocalSettings()
    vad: VadSettings = VadSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    metrics: MetricsSettings = MetricsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    fake: FakeSettings = FakeSettings()
    log: LogSettings = LogSettings()

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _empty_base_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("openai_base_url")
    @classmethod
    def _valid_openai_base_url(cls, value: str | None) -> str | None:
        return _check_base_url(value)

    def api_key_for(self, stage: StageSettings) -> str | None:
        key = stage.api_key or self.openai_api_key
        return key.get_secret_value() if key is not None and key.get_secret_value() else None

    def base_url_for(self, stage: StageSettings) -> str | None:
        return stage.base_url or self.openai_base_url

    def secrets(self) -> tuple[str, ...]:
        """Every configured key, so error messages and logs can be scrubbed of them."""
        keys = [self.openai_api_key, self.stt.api_key, self.llm.api_key, self.tts.api_key]
        keys += self.auth.api_keys
        return tuple(k.get_secret_value() for k in keys if k is not None and k.get_secret_value())


def setting_names() -> set[str]:
    """Every environment variable the settings read under the VOICE_FSM_ prefix."""
    names = set()
    for name, field in Settings.model_fields.items():
        if field.validation_alias is not None:
            continue  # OPENAI_API_KEY and OPENAI_BASE_URL
        top = f"VOICE_FSM_{name.upper()}"
        names.add(top)
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names.update(f"{top}__{sub.upper()}" for sub in group.model_fields)
    return names | {"VOICE_FSM_OPENAI_API_KEY", "VOICE_FSM_OPENAI_BASE_URL"}


def unknown_setting_names(names: Iterable[str]) -> list[str]:
    """The VOICE_FSM_ names among `names` that no setting reads: most likely typos."""
    known = setting_names()
    return sorted(
        {n for n in names if n.upper().startswith("VOICE_FSM_") and n.upper() not in known}
    )
