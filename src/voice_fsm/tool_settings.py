"""The settings of tool calls: where the tools come from and how a turn with tools runs."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voice_fsm.settings_types import SettingsGroup, StrList

DEFAULT_FILLERS = ["One moment.", "Let me check.", "Just a second."]


class McpServer(BaseModel):
    """One MCP server: a command started over stdio, or a streamable HTTP URL."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="a label for the logs (default: derived)")
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError('give either "command" (stdio) or "url" (streamable HTTP)')
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError('"url" must start with http:// or https://')
        return self

    @property
    def label(self) -> str:
        """A name for logs and errors; never the URL's credentials, query or path (where
        tokens may be)."""
        if self.name:
            return self.name
        if self.command is not None:
            return self.command[-1].rsplit("/", 1)[-1]
        host = urlsplit(self.url or "").hostname
        return host or "mcp"


class ToolSettings(SettingsGroup):
    """Tools the language model may call (`VOICE_FSM_TOOLS__*`)."""

    functions: StrList = Field(
        default_factory=list,
        description="Python functions offered as tools, as package.module:function",
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        description='MCP servers, a JSON list of {"command": [...], "env": {...}} (stdio) or '
        '{"url": "..."} (streamable HTTP); needs the mcp extra',
    )
    builtins: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="the built-in clock and calculator tools; auto: on with the embedded "
        "language model, off otherwise",
    )
    timezone: str | None = Field(
        default=None, description="the clock tool's IANA time zone; unset: the machine's"
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="how long a server tool may run"
    )
    client_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="how long a client has to answer a tool.call"
    )
    max_rounds: int = Field(
        default=3, ge=1, le=10, description="language model calls with tool results per turn"
    )
    max_result_chars: int = Field(
        default=4000, ge=100, description="a tool result longer than this is an error"
    )
    filler_after_ms: int = Field(
        default=800,
        ge=0,
        description="speak a filler phrase when tools still run this long and nothing has "
        "been said in the turn; 0: never",
    )
    fillers: StrList = Field(
        default_factory=lambda: list(DEFAULT_FILLERS),
        description="the filler phrases, one picked per turn",
    )

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return [] if value == "" else value
