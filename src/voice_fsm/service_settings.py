"""The settings of the service around the turns: who may connect, limits, metrics, the
dashboard, logging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voice_fsm.settings_types import SecretList, SettingsGroup, StrList


class ServerSettings(SettingsGroup):
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


class AuthSettings(SettingsGroup):
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


class LimitSettings(SettingsGroup):
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


class MetricsSettings(SettingsGroup):
    """Prometheus metrics at /metrics."""

    enabled: bool = Field(default=True, description="record metrics and serve /metrics")
    public: bool = Field(
        default=False,
        description="/metrics answers without a key even when VOICE_FSM_AUTH__API_KEYS is set",
    )


class DashboardSettings(SettingsGroup):
    """The built-in dashboard at /dashboard."""

    turns: int = Field(
        default=500, ge=1, le=100_000, description="finished turns the dashboard keeps in memory"
    )


class LogSettings(SettingsGroup):
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="auto (console on a terminal, JSON lines otherwise), json or console",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error"
    )
