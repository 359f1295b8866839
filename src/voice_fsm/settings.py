"""Settings, read from the environment and `.env`.

Names take the prefix ``VOICE_FSM_`` and ``__`` for nesting (``VOICE_FSM_LLM__MODEL``). The
standard ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are read too, as the fallback for every
stage's key and base_url.

The groups live beside this module, by what they are about: `stage_settings` (speech-to-text,
language model, text-to-speech, turn detection), `engine_settings` (the local and fake
engines), `service_settings` (server, auth, limits, metrics, dashboard, log), on the base in
`settings_types`. All of them can be imported from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_fsm.engine_settings import FakeSettings, LocalSettings
from voice_fsm.service_settings import (
    AuthSettings,
    DashboardSettings,
    LimitSettings,
    LogSettings,
    MetricsSettings,
    ServerSettings,
)
from voice_fsm.settings_types import SecretList, SettingsGroup, StrList, check_base_url
from voice_fsm.stage_settings import (
    DEFAULT_INSTRUCTIONS,
    REALTIME_TTS_MODEL,
    S2S_MODEL,
    SPEECH_API_MODEL,
    LlmSettings,
    Provider,
    SpeechToSpeechSettings,
    StageSettings,
    SttSettings,
    TtsSettings,
    VadProvider,
    VadSettings,
)
from voice_fsm.tool_settings import McpServer, ToolSettings

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "REALTIME_TTS_MODEL",
    "S2S_MODEL",
    "SPEECH_API_MODEL",
    "AuthSettings",
    "DashboardSettings",
    "FakeSettings",
    "LimitSettings",
    "LlmSettings",
    "LocalSettings",
    "LogSettings",
    "McpServer",
    "MetricsSettings",
    "Provider",
    "SecretList",
    "ServerSettings",
    "Settings",
    "SettingsGroup",
    "SpeechToSpeechSettings",
    "StageSettings",
    "StrList",
    "SttSettings",
    "ToolSettings",
    "TtsSettings",
    "VadProvider",
    "VadSettings",
    "setting_names",
    "unknown_setting_names",
]


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
    pipeline: Literal["cascade", "speech-to-speech"] = Field(
        default="cascade",
        description="each session's pipeline unless its client picks one: cascade "
        "(speech-to-text, language model, text-to-speech) or speech-to-speech (a Realtime "
        "model hears and answers aloud: see VOICE_FSM_S2S__*)",
    )
    stt: SttSettings = SttSettings()
    llm: LlmSettings = LlmSettings()
    tts: TtsSettings = TtsSettings()
    s2s: SpeechToSpeechSettings = SpeechToSpeechSettings()
    local: LocalSettings = LocalSettings()
    vad: VadSettings = VadSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    metrics: MetricsSettings = MetricsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    fake: FakeSettings = FakeSettings()
    log: LogSettings = LogSettings()
    tools: ToolSettings = ToolSettings()

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _empty_base_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("openai_base_url")
    @classmethod
    def _valid_openai_base_url(cls, value: str | None) -> str | None:
        return check_base_url(value)

    def api_key_for(self, stage: StageSettings) -> str | None:
        key = stage.api_key or self.openai_api_key
        return key.get_secret_value() if key is not None and key.get_secret_value() else None

    def base_url_for(self, stage: StageSettings) -> str | None:
        return stage.base_url or self.openai_base_url

    def secrets(self) -> tuple[str, ...]:
        """Every configured key, so error messages and logs can be scrubbed of them."""
        keys = [self.openai_api_key, self.stt.api_key, self.llm.api_key, self.tts.api_key]
        keys.append(self.s2s.api_key)
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
