"""MCP servers as a tool source: a real FastMCP server (tests/support/mcp_weather_server.py)
over stdio and over streamable HTTP, through the official SDK."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from voice_fsm.tool_settings import McpServer
from voice_fsm.tools.calls import ServerTool, ToolFailure, ToolSource
from voice_fsm.tools.mcp_connection import MAX_STDERR_LINE
from voice_fsm.tools.mcp_servers import McpToolSource

from support.servers import clean_env, eventually, free_port, running_server

pytest.importorskip("mcp")

WEATHER = Path(__file__).parent / "support" / "mcp_weather_server.py"
SECRET = "weather-token-5f2c9e"
UNAVAILABLE = "The tool server weather is not available right now."

Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs() -> Iterator[Logs]:
    with capture_logs() as captured:
        yield captured


def stdio_server(**env: str) -> McpServer:
    return McpServer(name="weather", command=[sys.executable, str(WEATHER)], env=env)


@pytest.fixture
async def weather(logs: Logs) -> AsyncIterator[McpToolSource]:
    source = McpToolSource(stdio_server(WEATHER_TOKEN=SECRET), log=structlog.get_logger())
    await source.start()
    try:
        yield source
    finally:
        await source.aclose()


def tool(source: McpToolSource, name: str) -> ServerTool:
    found = [t for t in source.tools() if t.spec.name == name]
    assert found, f"{name} not in {[t.spec.name for t in source.tools()]}"
    return found[0]


def stderr_lines(logs: Logs) -> list[str]:
    return [e["line"] for e in logs if e["event"] == "mcp.stderr"]


async def until_answered(
    source: McpToolSource, name: str, arguments: dict[str, Any], seconds: float = 20.0
) -> Any:
    """Call until the tool answers: its server is (re)starting."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await tool(source, name).call(arguments)
            except ToolFailure:
                await asyncio.sleep(0.05)


async def until_failed(
    source: McpToolSource, name: str, arguments: dict[str, Any], seconds: float = 5.0
) -> ToolFailure:
    """Call until the tool fails: its server is going away."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                await tool(source, name).call(arguments)
            except ToolFailure as failure:
                return failure
            await asyncio.sleep(0.01)


async def test_stdio_server_tools_are_listed_at_start_and_answer(weather: McpToolSource) -> None:
    assert isinstance(weather, ToolSource)
    forecast = tool(weather, "forecast")
    assert isinstance(forecast, ServerTool)
    assert forecast.source == "mcp:weather"
    assert forecast.spec.description == "Tomorrow's weather in a city."
    assert forecast.spec.parameters["properties"]["city"]["type"] == "string"
    assert forecast.spec.parameters["required"] == ["city"]

    assert await forecast.call({"city": "Paris"}) == "Sunny in Paris, 21 degrees."
    # Structured content is preferred over its text rendering.
    assert await tool(weather, "temperature").call({"city": "Oslo"}) == {
        "city": "Oslo",
        "celsius": 19,
    }


async def test_an_error_result_is_a_failure_the_model_hears(weather: McpToolSource) -> None:
    with pytest.raises(ToolFailure) as failure:
        await tool(weather, "broken").call({"reason": "no snow today"})
    assert failure.value.kind == "failed"
    assert "no snow today" in failure.value.message


async def test_the_server_gets_its_env_and_none_of_ours(weather: McpToolSource, logs: Logs) -> None:
    env = tool(weather, "env")
    assert await env.call({"name": "WEATHER_TOKEN"}) == SECRET
    assert await env.call({"name": "PATH"}) != "unset"
    # Set in our environment by pytest: the server gets a minimal one, not ours.
    assert await env.call({"name": "PYTEST_CURRENT_TEST"}) == "unset"
    assert SECRET not in repr(logs)


async def test_a_tool_added_by_the_server_is_listed(weather: McpToolSource) -> None:
    assert "greet" not in {t.spec.name for t in weather.tools()}
    assert await tool(weather, "add_tool").call({"name": "greet"}) == "added"
    await eventually(lambda: "greet" in {t.spec.name for t in weather.tools()})
    assert await tool(weather, "greet").call({}) == "hello from greet"


async def test_stderr_reaches_the_log_line_by_line_and_cut(
    weather: McpToolSource, logs: Logs
) -> None:
    assert "weather server ready" in stderr_lines(logs)
    await tool(weather, "shout").call({"text": "first line\nsecond line"})
    await tool(weather, "shout").call({"text": "x" * (MAX_STDERR_LINE * 3)})
    await eventually(lambda: "second line" in stderr_lines(logs))
    assert "first line" in stderr_lines(logs)
    await eventually(lambda: "x" * MAX_STDERR_LINE in stderr_lines(logs))
    assert all(len(line) <= MAX_STDERR_LINE for line in stderr_lines(logs))
    assert {e["server"] for e in logs if e["event"] == "mcp.stderr"} == {"weather"}


async def test_a_killed_server_is_unavailable_then_restarted(
    weather: McpToolSource, logs: Logs
) -> None:
    first_pid = int(await tool(weather, "pid").call({}))
    os.kill(first_pid, signal.SIGKILL)

    failure = await until_failed(weather, "forecast", {"city": "Paris"})
    assert failure.kind == "unavailable"
    assert failure.message == UNAVAILABLE
    await eventually(lambda: any(e["event"] == "mcp.unavailable" for e in logs))
    unavailable = [e for e in logs if e["event"] == "mcp.unavailable"]
    assert unavailable[0]["server"] == "weather"
    assert unavailable[0]["retry_in_s"] == 0.5

    assert await until_answered(weather, "forecast", {"city": "Rome"}) == (
        "Sunny in Rome, 21 degrees."
    )
    assert int(await tool(weather, "pid").call({})) != first_pid
    assert SECRET not in repr(logs)


async def test_a_cancelled_call_returns_at_once_and_the_server_is_told(
    weather: McpToolSource, logs: Logs
) -> None:
    call = asyncio.create_task(tool(weather, "slow").call({"seconds": 30}))
    await eventually(lambda: "slow call started" in stderr_lines(logs), seconds=10)

    began = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert time.monotonic() - began < 0.1

    # notifications/cancelled reached the server, which stopped the tool's work.
    await eventually(lambda: "slow call cancelled" in stderr_lines(logs), seconds=5)
    # The session goes on.
    assert await tool(weather, "forecast").call({"city": "Lima"}) == "Sunny in Lima, 21 degrees."


async def test_aclose_stops_the_server_and_every_task(logs: Logs) -> None:
    before = asyncio.all_tasks()
    source = McpToolSource(stdio_server(), log=structlog.get_logger())
    await source.start()
    pid = int(await tool(source, "pid").call({}))
    await source.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert asyncio.all_tasks() == before


async def test_a_server_that_cannot_start_is_retried_with_backoff(logs: Logs) -> None:
    server = McpServer(name="missing", command=["/nonexistent/mcp-server"], env={"API_KEY": SECRET})
    source = McpToolSource(server, log=structlog.get_logger(), start_wait_s=0.2)
    began = time.monotonic()
    await source.start()
    assert time.monotonic() - began < 2
    assert source.tools() == ()

    def retries() -> list[float]:
        return [e["retry_in_s"] for e in logs if e["event"] == "mcp.unavailable"]

    await eventually(lambda: len(retries()) >= 3, seconds=5)
    assert retries()[:3] == [0.5, 1.0, 2.0]
    assert all(e["server"] == "missing" for e in logs if e["event"] == "mcp.unavailable")
    assert SECRET not in repr(logs)
    await source.aclose()


async def test_streamable_http_server(tmp_path: Path, logs: Logs) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    command = [sys.executable, str(WEATHER), "--http", str(port)]
    serve: dict[str, Any] = {
        "ready_url": url,
        "env": clean_env(),
        "cwd": tmp_path,
        "log": tmp_path / "weather.log",
    }
    source = McpToolSource(
        McpServer(name="weather", url=url), log=structlog.get_logger(), ping_interval_s=0.2
    )
    try:
        with running_server(command, **serve):
            await source.start()
            forecast = tool(source, "forecast")
            assert forecast.source == "mcp:weather"
            assert await forecast.call({"city": "Nairobi"}) == "Sunny in Nairobi, 21 degrees."
            await tool(source, "add_tool").call({"name": "wave"})
            await eventually(lambda: "wave" in {t.spec.name for t in source.tools()})

        # The server is gone: noticed by the ping, and its tools say so.
        await eventually(lambda: any(e["event"] == "mcp.unavailable" for e in logs), seconds=5)
        with pytest.raises(ToolFailure) as failure:
            await forecast.call({"city": "Nairobi"})
        assert failure.value.message == UNAVAILABLE

        with running_server(command, **serve):
            answer = await until_answered(source, "forecast", {"city": "Quito"})
            assert answer == "Sunny in Quito, 21 degrees."
    finally:
        await source.aclose()
