"""The toolbox: every way a call can end gives the model a result, never an exception."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from voice_fsm.adapters.base import ToolCall, ToolSpec
from voice_fsm.tool_settings import ToolSettings
from voice_fsm.tools.calls import ServerTool, ToolFailure, ToolResult, ToolSource
from voice_fsm.tools.functions import ToolConfigError, function_tool, load_function_tools
from voice_fsm.tools.toolbox import Toolbox, build_toolbox

EXAMPLES = "support.example_tools"
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}


class FakeTool:
    """A tool that is not a Python function (an MCP server's, say): the toolbox checks its
    arguments against the schema itself."""

    def __init__(
        self, name: str, schema: dict[str, Any] | None = None, source: str = "mcp:fake"
    ) -> None:
        self._spec = ToolSpec(name, f"The {name} tool.", schema or {"type": "object"})
        self._source = source
        self.calls: list[dict[str, Any]] = []
        self.raises: BaseException | None = None

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def source(self) -> str:
        return self._source

    async def call(self, arguments: dict[str, Any]) -> Any:
        self.calls.append(arguments)
        if self.raises is not None:
            raise self.raises
        return {"got": arguments}


class FakeSource:
    def __init__(
        self, name: str, tools: Sequence[ServerTool] = (), journal: list[str] | None = None
    ):
        self.name = name
        self.offered = list(tools)
        self.journal = journal if journal is not None else []
        self.fail_start: Exception | None = None

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.fail_start is not None:
            raise self.fail_start

    def tools(self) -> Sequence[ServerTool]:
        return self.offered

    async def aclose(self) -> None:
        self.journal.append(f"close {self.name}")


def functions(*names: str) -> list[ServerTool]:
    return load_function_tools([f"{EXAMPLES}:{name}" for name in names])


async def run(
    box: Toolbox, name: str, arguments: str = "{}", *, timeout_s: float = 5, max_chars: int = 4000
) -> ToolResult:
    result = await box.run(
        ToolCall("call_1", name, arguments), timeout_s=timeout_s, max_result_chars=max_chars
    )
    assert (result.call_id, result.name) == ("call_1", name)
    return result


def failed(result: ToolResult, kind: str) -> str:
    assert not result.ok
    assert result.kind == kind
    assert result.output is None
    assert result.content == f"Error: {result.error}"
    return result.error or ""


async def test_a_call_that_works_gives_json_text() -> None:
    box = Toolbox(functions("add", "greet", "weather"))
    result = await run(box, "add", '{"a": 17, "b": 25}')
    assert (result.ok, result.output, result.kind) == (True, "42", None)
    assert result.content == "42"
    assert (await run(box, "greet", '{"name": "Zoë"}')).output == "Hello, Zoë."  # as is
    weather = json.loads((await run(box, "weather", '{"city": "Köln"}')).output or "")
    assert weather == {"city": "Köln", "unit": "celsius", "days": None, "hours": [], "wind": 0.5}


async def test_unknown_tool() -> None:
    box = Toolbox(functions("add"))
    assert failed(await run(box, "subtract"), "unknown-tool") == "there is no tool named 'subtract'"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"a": 1,', "the arguments are not JSON"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('"a"', "must be a JSON object, not str"),
        ('{"a": "one", "b": 2}', "a: Input should be a valid integer"),
        ('{"a": 1}', "b: Field required"),
        ('{"a": 1, "b": 2, "c": 3}', "c: Extra inputs are not permitted"),
        ("x" * 70_000, "the arguments are too long"),
    ],
)
async def test_invalid_arguments_are_reported_and_the_function_never_runs(
    arguments: str, message: str
) -> None:
    ran = []

    def add(a: int, b: int) -> int:
        """Add."""
        ran.append((a, b))
        return a + b

    box = Toolbox([function_tool(add)])
    assert message in failed(await run(box, "add", arguments), "invalid-arguments")
    assert ran == []


async def test_empty_arguments_call_a_tool_that_takes_none() -> None:
    result = await run(Toolbox(functions("which_thread")), "which_thread", "")
    assert result.ok


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{}", "arguments: 'city' is a required property"),
        ('{"city": "Oslo", "days": "two"}', "days: 'two' is not of type 'integer'"),
    ],
)
async def test_other_tools_arguments_are_checked_against_their_schema(
    arguments: str, message: str
) -> None:
    tool = FakeTool("forecast", CITY_SCHEMA)
    box = Toolbox(sources=[FakeSource("fake", [tool])])
    assert message in failed(await run(box, "forecast", arguments), "invalid-arguments")
    assert tool.calls == []
    assert (await run(box, "forecast", '{"city": "Oslo", "days": 2}')).ok
    assert tool.calls == [{"city": "Oslo", "days": 2}]


async def test_a_tool_whose_own_schema_is_broken_is_still_called() -> None:
    tool = FakeTool("odd", {"type": "object", "properties": {"x": {"type": 12}}})
    with capture_logs() as logs:
        result = await run(Toolbox([tool]), "odd", '{"x": 1}')
    assert result.ok
    assert any(entry["event"] == "tools.schema_invalid" for entry in logs)


async def test_a_tool_that_takes_too_long_times_out() -> None:
    started = asyncio.Event()

    async def wait_forever() -> None:
        """Never answers."""
        started.set()
        await asyncio.Event().wait()

    result = await run(Toolbox([function_tool(wait_forever)]), "wait_forever", timeout_s=0.05)
    assert failed(result, "timeout") == "the tool did not answer within 0.05 s"
    assert started.is_set()
    assert result.duration_ms >= 50


async def test_a_tools_own_timeout_error_is_its_failure_not_ours() -> None:
    result = await run(Toolbox(functions("socket_timeout")), "socket_timeout")
    assert failed(result, "failed") == "TimeoutError: read timed out"


async def test_a_tool_failure_keeps_its_kind_and_message() -> None:
    tool = FakeTool("flaky")
    tool.raises = ToolFailure("unavailable", "The tool server is not available right now.")
    result = await run(Toolbox([tool]), "flaky")
    assert failed(result, "unavailable") == "The tool server is not available right now."


async def test_an_exception_is_reported_by_type_and_message_and_logged() -> None:
    with capture_logs() as logs:
        result = await run(Toolbox(functions("explode")), "explode")
    assert failed(result, "failed") == "RuntimeError: the weather service is down"
    (entry,) = [e for e in logs if e["event"] == "tool.raised"]
    assert entry["tool"] == "explode"
    assert isinstance(entry["exc_info"], RuntimeError)
    (called,) = [e for e in logs if e["event"] == "tool.called"]
    assert (called["ok"], called["kind"], called["source"]) == (False, "failed", "function")


async def test_sys_exit_in_a_tool_does_not_stop_the_server() -> None:
    def leave() -> None:
        """Exits."""
        sys.exit(3)

    assert failed(await run(Toolbox([function_tool(leave)]), "leave"), "failed") == "SystemExit: 3"


async def test_a_long_exception_message_is_cut() -> None:
    tool = FakeTool("verbose")
    tool.raises = ValueError("x" * 10_000)
    assert len(failed(await run(Toolbox([tool]), "verbose"), "failed")) == 500


@pytest.mark.parametrize("name", ["not_json", "not_a_number"])
async def test_output_that_is_not_json_is_bad_output(name: str) -> None:
    message = failed(await run(Toolbox(functions(name)), name), "bad-output")
    assert message.startswith("the tool returned something that is not JSON")


async def test_output_longer_than_the_limit_is_too_large() -> None:
    box = Toolbox(functions("text_of"))
    assert (await run(box, "text_of", '{"length": 4000}', max_chars=4000)).ok
    result = await run(box, "text_of", '{"length": 4001}', max_chars=4000)
    assert failed(result, "too-large") == (
        "the result has 4001 characters, more than the 4000 allowed"
    )


async def test_a_sync_tool_runs_off_the_event_loop_thread() -> None:
    result = await run(Toolbox(functions("which_thread")), "which_thread")
    assert json.loads(result.output or "")["thread"] != threading.get_ident()


async def test_cancelling_a_call_stops_the_tool_at_once() -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def wait_forever() -> None:
        """Never answers."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    box = Toolbox([function_tool(wait_forever)])
    task = asyncio.create_task(run(box, "wait_forever", timeout_s=60))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()


async def test_cancelling_a_sync_call_stops_awaiting_its_thread_at_once() -> None:
    started, release = threading.Event(), threading.Event()

    def block() -> None:
        """Blocks its thread."""
        started.set()
        release.wait(30)

    box = Toolbox([function_tool(block)])
    task = asyncio.create_task(run(box, "block", timeout_s=60))
    try:
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        # The thread still blocks; the call returns without it.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert not release.is_set()
    finally:
        release.set()


async def test_a_tool_cancelling_its_own_work_is_an_error_result() -> None:
    tool = FakeTool("quitter")
    tool.raises = asyncio.CancelledError()
    assert failed(await run(Toolbox([tool]), "quitter"), "cancelled")


def test_two_fixed_tools_with_one_name_are_a_config_error() -> None:
    with pytest.raises(ToolConfigError, match="two tools are named 'add'"):
        Toolbox([*functions("add"), FakeTool("add")])


async def test_a_sources_tool_with_a_taken_name_is_skipped_with_a_warning() -> None:
    taken, other = FakeTool("add", source="mcp:one"), FakeTool("lookup", source="mcp:one")
    source = FakeSource("one", [taken, other])
    box = Toolbox(functions("add"), [source])
    with capture_logs() as logs:
        assert box.names() == ["add", "lookup"]
        assert [spec.name for spec in box.specs()] == ["add", "lookup"]
    warnings = [e for e in logs if e["event"] == "tools.duplicate_name"]
    assert warnings == [
        {
            "event": "tools.duplicate_name",
            "log_level": "warning",
            "tool": "add",
            "skipped": "mcp:one",
            "kept": "function",
        }
    ]
    assert (await run(box, "add", '{"a": 1, "b": 1}')).output == "2"
    assert taken.calls == []


async def test_a_sources_tools_follow_its_changes() -> None:
    source = FakeSource("live", [FakeTool("first")])
    box = Toolbox(sources=[source])
    assert box.has("first")
    source.offered = [FakeTool("second")]
    assert (box.has("first"), box.has("second")) == (False, True)
    assert failed(await run(box, "first"), "unknown-tool")
    assert (await run(box, "second")).ok


async def test_start_and_close_reach_every_source() -> None:
    journal: list[str] = []
    box = Toolbox(sources=[FakeSource("a", journal=journal), FakeSource("b", journal=journal)])
    await box.start()
    await box.aclose()
    assert journal == ["start a", "start b", "close b", "close a"]


async def test_a_source_that_fails_to_start_closes_the_started_ones() -> None:
    journal: list[str] = []
    bad = FakeSource("b", journal=journal)
    bad.fail_start = ValueError("VOICE_FSM_TOOLS__MCP_SERVERS: no such command")
    sources: list[ToolSource] = [FakeSource("a", journal=journal), bad]
    with pytest.raises(ValueError, match="no such command"):
        await Toolbox(sources=sources).start()
    assert journal == ["start a", "start b", "close a"]


@pytest.mark.parametrize(
    ("builtins", "local_llm", "names"),
    [
        ("auto", False, ["add"]),
        ("auto", True, ["clock", "calculator", "add"]),
        ("on", False, ["clock", "calculator", "add"]),
        ("off", True, ["add"]),
    ],
)
def test_build_toolbox_adds_the_builtins_as_set(
    builtins: str, local_llm: bool, names: list[str]
) -> None:
    settings = ToolSettings(functions=[f"{EXAMPLES}:add"], builtins=builtins)
    box = build_toolbox(settings, local_llm=local_llm, sources=[FakeSource("s", [FakeTool("x")])])
    assert box.names() == [*names, "x"]


def test_build_toolbox_reports_a_bad_setting_at_once() -> None:
    with pytest.raises(ToolConfigError, match="VOICE_FSM_TOOLS__TIMEZONE"):
        build_toolbox(ToolSettings(builtins="on", timezone="Nowhere/Town"), local_llm=False)
    with pytest.raises(ToolConfigError, match="VOICE_FSM_TOOLS__FUNCTIONS"):
        build_toolbox(ToolSettings(functions=["nowhere:tool"]), local_llm=False)
