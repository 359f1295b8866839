"""A real MCP server for the tests, written with the official SDK's FastMCP.

Run as a script: over stdio by default, over streamable HTTP with `--http PORT` (at /mcp).
It says "weather server ready" on stderr at start, so a test sees its stderr reach our log.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio
from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("weather", log_level="WARNING")


def say(line: str) -> None:
    """One line on stderr, flushed at once: the client logs stderr line by line."""
    print(line, file=sys.stderr, flush=True)


@server.tool(structured_output=False)
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"Sunny in {city}, 21 degrees."


@server.tool()
def temperature(city: str) -> dict[str, object]:
    """The temperature now in a city, as structured data."""
    return {"city": city, "celsius": 19}


@server.tool(structured_output=False)
def broken(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(reason)


@server.tool(structured_output=False)
async def slow(seconds: float) -> str:
    """Sleeps, then answers; says on stderr when the client cancels it."""
    say("slow call started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        say("slow call cancelled")
        raise
    return "done sleeping"


@server.tool(structured_output=False)
def pid() -> str:
    """The server's process id, so that a test can kill it."""
    return str(os.getpid())


@server.tool(structured_output=False)
def env(name: str) -> str:
    """The value of one of the server's environment variables, or "unset"."""
    return os.environ.get(name, "unset")


@server.tool(structured_output=False)
def shout(text: str) -> str:
    """Writes the text on stderr."""
    say(text)
    return "said"


@server.tool(structured_output=False)
async def add_tool(name: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """Adds a tool of that name (it answers "hello from <name>") and tells the client."""

    def added() -> str:
        return f"hello from {name}"

    server.add_tool(
        added, name=name, description=f"Says hello from {name}.", structured_output=False
    )
    await ctx.session.send_tool_list_changed()
    return "added"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, help="serve streamable HTTP on this port")
    args = parser.parse_args()
    say("weather server ready")
    if args.http is None:
        server.run("stdio")
        return
    server.settings.port = args.http
    server.run("streamable-http")


if __name__ == "__main__":
    main()
