"""What every tool source shares: a server tool, a source of them, and how a call ended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from voice_fsm.adapters.base import ToolSpec

RunsOn = Literal["server", "client"]


class ToolFailure(Exception):
    """A tool call that failed in a way the language model should hear about (its message is
    the error result it gets). `kind` names the failure for logs and metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@runtime_checkable
class ServerTool(Protocol):
    """A tool the server runs. `call` gets arguments already checked against
    `spec.parameters` and returns something JSON-serialisable (a string is passed as is);
    it raises `ToolFailure` for an error the model should hear, any other exception is
    reported as the tool's failure too. Cancelling the call must stop its work."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def source(self) -> str:
        """Where it comes from, for logs: "builtin", "function", "mcp:<server>"."""
        ...

    async def call(self, arguments: dict[str, Any]) -> Any: ...


@runtime_checkable
class ToolSource(Protocol):
    """A set of server tools that may change while the server runs (an MCP server's)."""

    async def start(self) -> None:
        """Connect and list the tools; raise a clear error if the configuration is wrong.
        A source that connects in the background returns at once."""
        ...

    def tools(self) -> Sequence[ServerTool]:
        """The tools available now."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ToolResult:
    """How one call ended: `output` (JSON text or plain text) when `ok`, else `error`, the
    message the language model gets, and `kind`, why (unknown-tool, invalid-arguments,
    timeout, failed, bad-output, too-large, cancelled)."""

    call_id: str
    name: str
    ok: bool
    output: str | None = None
    error: str | None = None
    kind: str | None = None
    duration_ms: int = 0

    @property
    def content(self) -> str:
        """What goes into the conversation as the tool message."""
        if self.ok:
            return self.output or ""
        return f"Error: {self.error}"
