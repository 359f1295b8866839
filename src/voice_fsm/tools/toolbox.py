"""The server's tools, from every source, and how one call is run: whatever the tool does,
the language model gets a result (an error result when the call failed) and the turn goes on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pydantic_core

from voice_fsm.adapters.base import ToolCall, ToolSpec
from voice_fsm.logging_setup import get_logger
from voice_fsm.tool_settings import ToolSettings
from voice_fsm.tools.arguments import SchemaChecks
from voice_fsm.tools.builtin import builtin_tools
from voice_fsm.tools.calls import ServerTool, ToolFailure, ToolResult, ToolSource
from voice_fsm.tools.functions import FunctionTool, ToolConfigError, load_function_tools

log = get_logger()
MAX_ARGUMENT_CHARS = 64_000  # a model's arguments are short; more is a runaway generation
MAX_ERROR_CHARS = 500  # an exception's message goes to the model: keep it to a sentence


class Toolbox:
    """Fixed tools (functions, built-ins), whose names must be unique, and the tools of
    `sources`, which may change while the server runs; a source's tool whose name is taken
    already is left out (with a warning)."""

    def __init__(
        self, fixed: Sequence[ServerTool] = (), sources: Sequence[ToolSource] = ()
    ) -> None:
        self._fixed: dict[str, ServerTool] = {}
        for tool in fixed:
            name = tool.spec.name
            if name in self._fixed:
                raise ToolConfigError(
                    f"two tools are named {name!r} ({self._fixed[name].source} and "
                    f"{tool.source}): tool names must be unique"
                )
            self._fixed[name] = tool
        self._sources = tuple(sources)
        self._warned: set[tuple[str, str]] = set()
        self._checks = SchemaChecks()

    async def start(self) -> None:
        """Start every source; if one fails (a wrong configuration), close the ones started
        and raise its error."""
        started: list[ToolSource] = []
        try:
            for source in self._sources:
                await source.start()
                started.append(source)
        except BaseException:
            await _close_all(started)
            raise

    async def aclose(self) -> None:
        await _close_all(self._sources)

    def specs(self) -> list[ToolSpec]:
        """The tools offered now, each name once."""
        return [tool.spec for tool in self._current().values()]

    def names(self) -> list[str]:
        return list(self._current())

    def has(self, name: str) -> bool:
        return name in self._current()

    def _current(self) -> dict[str, ServerTool]:
        tools = dict(self._fixed)
        for source in self._sources:
            try:
                offered = list(source.tools())
            except Exception:
                log.exception("tools.source_failed", source=type(source).__name__)
                continue
            for tool in offered:
                name = tool.spec.name
                if name not in tools:
                    tools[name] = tool
                elif (tool.source, name) not in self._warned:
                    self._warned.add((tool.source, name))
                    log.warning(
                        "tools.duplicate_name",
                        tool=name,
                        skipped=tool.source,
                        kept=tools[name].source,
                    )
        return tools

    async def run(self, call: ToolCall, *, timeout_s: float, max_result_chars: int) -> ToolResult:
        """Run `call`; never raises but `CancelledError` (when the caller is cancelled)."""
        started = time.monotonic()
        tool = self._current().get(call.name)
        source = tool.source if tool is not None else None
        try:
            if tool is None:
                raise ToolFailure("unknown-tool", f"there is no tool named {call.name!r}")
            arguments = self._arguments(tool, call.arguments)
            output = await _call(tool, arguments, timeout_s)
            text = _serialise(output)
            if len(text) > max_result_chars:
                raise ToolFailure(
                    "too-large",
                    f"the result has {len(text)} characters, more than the {max_result_chars} "
                    "allowed",
                )
            result = _result(call, started, ok=True, output=text)
        except ToolFailure as failure:
            result = _result(call, started, ok=False, error=failure.message, kind=failure.kind)
        log.info(
            "tool.called",
            tool=call.name,
            source=source,
            ok=result.ok,
            kind=result.kind,
            duration_ms=result.duration_ms,
        )
        return result

    def _arguments(self, tool: ServerTool, text: str) -> dict[str, Any]:
        if len(text) > MAX_ARGUMENT_CHARS:
            raise ToolFailure("invalid-arguments", "the arguments are too long")
        try:
            # An empty string is how some models call a tool without arguments.
            arguments = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ToolFailure("invalid-arguments", f"the arguments are not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ToolFailure(
                "invalid-arguments",
                f"the arguments must be a JSON object, not {type(arguments).__name__}",
            )
        if isinstance(tool, FunctionTool):
            tool.validate(arguments)  # pydantic's words are clearer than the schema's
        else:
            self._checks.check(tool.spec, arguments)
        return arguments


async def _call(tool: ServerTool, arguments: dict[str, Any], timeout_s: float) -> Any:
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            return await tool.call(arguments)
    except ToolFailure:
        raise
    except TimeoutError as exc:
        if deadline.expired():
            message = f"the tool did not answer within {timeout_s:g} s"
            raise ToolFailure("timeout", message) from None
        raise _failed(tool, exc) from None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled, not just the tool's own work
        raise ToolFailure("cancelled", "the tool's work was cancelled") from None
    except (Exception, SystemExit) as exc:  # sys.exit() in a tool must not stop the server
        raise _failed(tool, exc) from None


def _failed(tool: ServerTool, exc: BaseException) -> ToolFailure:
    log.warning("tool.raised", tool=tool.spec.name, source=tool.source, exc_info=exc)
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return ToolFailure("failed", message)


def _serialise(output: Any) -> str:
    if isinstance(output, str):
        return output
    try:
        # pydantic's encoder takes what a function naturally returns (a model, a dataclass,
        # a datetime) and refuses anything else; NaN and infinity are not JSON.
        return json.dumps(
            output, ensure_ascii=False, allow_nan=False, default=pydantic_core.to_jsonable_python
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ToolFailure(
            "bad-output", f"the tool returned something that is not JSON ({exc})"
        ) from None


def _result(
    call: ToolCall,
    started: float,
    *,
    ok: bool,
    output: str | None = None,
    error: str | None = None,
    kind: str | None = None,
) -> ToolResult:
    duration_ms = round((time.monotonic() - started) * 1000)
    return ToolResult(call.call_id, call.name, ok, output, error, kind, duration_ms)


async def _close_all(sources: Sequence[ToolSource]) -> None:
    for source in reversed(sources):
        try:
            await source.aclose()
        except Exception:
            log.exception("tools.close_failed", source=type(source).__name__)


def build_toolbox(
    settings: ToolSettings, *, local_llm: bool, sources: Sequence[ToolSource] = ()
) -> Toolbox:
    """The toolbox `settings` describe: its functions, the built-ins ("auto": with the
    embedded language model, which needs them most) and `sources` (MCP servers). Raises
    `ToolConfigError` for a function or a time zone that cannot be used."""
    fixed: list[ServerTool] = []
    if settings.builtins == "on" or (settings.builtins == "auto" and local_llm):
        fixed.extend(builtin_tools(settings.timezone))
    fixed.extend(load_function_tools(settings.functions))
    return Toolbox(fixed, sources)
