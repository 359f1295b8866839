"""Protocol v1's tool messages (see docs/protocol.md, "Tool calls"): the tools a client
declares, its answers to calls, and the server's calls, results and cancellations."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from voice_fsm.protocol_base import Message as _Message

MAX_CLIENT_TOOLS = 32
MAX_SCHEMA_CHARS = 8000
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ClientTool(_Message):
    """A tool the client runs, declared in the Realtime API's shape: when the language model
    calls it the server sends `tool.call` and waits for the client's `tool.result`."""

    type: Literal["function"] = "function"
    name: ToolName
    description: str = Field(default="", max_length=1000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('parameters must be a JSON Schema with "type": "object"')
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"parameters must be at most {MAX_SCHEMA_CHARS} characters of JSON")
        return value


class ToolResultCommand(_Message):
    """The client's answer to a `tool.call` of one of its tools: `output` (any JSON; a
    string is passed to the model as is) or `error` (a message the model gets)."""

    type: Literal["tool.result"]
    call_id: str = Field(min_length=1, max_length=100)
    output: Any = None
    error: str | None = Field(default=None, max_length=2000)


RunsOn = Literal["server", "client"]


class ToolCallEvent(_Message):
    """The language model called a tool; `runs_on` client: the client is to run it and answer
    with `tool.result`. `arguments` is the JSON text the model wrote."""

    type: Literal["tool.call"] = "tool.call"
    turn: int
    call_id: str
    name: str
    arguments: str
    runs_on: RunsOn


class ToolResultEvent(_Message):
    """How a call ended: `output` when ok, else `error` (the model hears it either way)."""

    type: Literal["tool.result"] = "tool.result"
    turn: int
    call_id: str
    name: str
    ok: bool
    output: str | None = None
    error: str | None = None
    duration_ms: int


class ToolCancelled(_Message):
    """A client tool's call is no longer wanted (barge-in, response.cancel): drop it."""

    type: Literal["tool.cancelled"] = "tool.cancelled"
    turn: int
    call_id: str


class ToolTiming(_Message):
    name: str
    runs_on: RunsOn
    ok: bool
    kind: str | None = None
    """Why it failed: unknown-tool, invalid-arguments, timeout, failed, bad-output,
    too-large, cancelled."""
    ms: int
