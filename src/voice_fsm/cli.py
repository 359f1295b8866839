"""The `voice-fsm` command: `serve` runs the server, `talk` runs one turn against it.

Exit codes: 0 success, 1 the server answered a turn with an error, 2 a usage, configuration or
connection problem (one line on stderr, no traceback), 3 `serve` could not listen (uvicorn's
start-up failure, e.g. the port is in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from voice_fsm import __version__
from voice_fsm.talk import DEFAULT_URL

PROG = "voice-fsm"
# Settings fields read from a standard variable rather than a VOICE_FSM_ one.
_STANDARD_ENV = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL"}
_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)" from source "(\w+)"')


def env_var_for(loc: Sequence[int | str]) -> str:
    """The environment variable behind a settings error location: ('llm', 'timeout') ->
    VOICE_FSM_LLM__TIMEOUT."""
    parts = [str(part) for part in loc]
    if parts and parts[0].lower() in _STANDARD_ENV:
        return _STANDARD_ENV[parts[0].lower()]
    return "VOICE_FSM_" + "__".join(part.upper() for part in parts)


def format_settings_error(err: ValidationError | SettingsError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    if isinstance(err, SettingsError):
        # Raised when a group's value (VOICE_FSM_LLM='...') is not valid JSON.
        match = _SETTINGS_ERROR_FIELD.search(str(err))
        if match is None:
            return f"invalid settings: {err}"
        where = " (in .env)" if match.group(2).startswith("DotEnv") else ""
        reason = f": not valid JSON ({err.__cause__})" if err.__cause__ else ""
        return f"invalid setting {env_var_for([match.group(1)])}{where}{reason}"
    problems = [
        f"{env_var_for(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
        for error in err.errors(include_url=False)
    ]
    if len(problems) == 1:
        return f"invalid setting {problems[0]}"
    return "invalid settings: " + "; ".join(problems)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A voice agent server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings come from VOICE_FSM_* variables and .env.",
    )
    serve.add_argument("--host", help="interface to listen on (default: VOICE_FSM_HOST)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: VOICE_FSM_PORT)")

    talk = commands.add_parser(
        "talk",
        help="send a WAV file as one turn and show the reply",
        description="Send a WAV file as one push-to-talk turn and show the reply.",
    )
    talk.add_argument("--wav", required=True, help="the question: a PCM WAV file, any rate")
    talk.add_argument("--out", help="save the spoken reply here (24 kHz mono WAV)")
    talk.add_argument(
        "--url", default=DEFAULT_URL, help=f"server WebSocket (default: {DEFAULT_URL})"
    )
    talk.add_argument("--realtime", action="store_true", help="send audio at speaking pace")
    talk.add_argument("--json", action="store_true", help="print one JSON object")
    talk.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        help="seconds the turn may take, besides sending at --realtime pace (default: 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(host=args.host, port=args.port)
    return talk(
        wav=args.wav,
        out=args.out,
        url=args.url,
        realtime=args.realtime,
        as_json=args.json,
        timeout=args.timeout,
    )


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _dotenv_names(path: Path) -> list[str]:
    """The variable names a .env file sets (values are not needed)."""
    if not path.is_file():
        return []
    names = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


def serve(*, host: str | None = None, port: int | None = None) -> int:
    import uvicorn

    from voice_fsm.app import create_app
    from voice_fsm.logging_setup import configure_logging, get_logger
    from voice_fsm.providers import ConfigError
    from voice_fsm.settings import Settings, unknown_setting_names

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as err:
        return _fail(format_settings_error(err))

    configure_logging(settings.log)
    unknown = unknown_setting_names([*os.environ, *_dotenv_names(Path(".env"))])
    if unknown:
        get_logger().warning(
            "settings.unknown", names=unknown, hint="no setting reads these: check the spelling"
        )
    try:
        app = create_app(settings)
    except ConfigError as err:
        return _fail(str(err))

    get_logger().info("server.starting", url=f"ws://{settings.host}:{settings.port}/ws")
    # uvicorn stops gracefully on Ctrl-C, then re-raises the signal: that is a normal stop.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # logging_setup owns the output
            access_log=False,
            # uvicorn deprecates its legacy "websockets" protocol; this is its replacement.
            ws="websockets-sansio",
        )
    return 0


def talk(
    *,
    wav: str,
    out: str | None,
    url: str,
    realtime: bool,
    as_json: bool,
    timeout: float,
) -> int:
    from voice_fsm.talk import TalkError, load_wav, save_wav, summary_lines
    from voice_fsm.talk import talk as run_turn

    try:
        pcm = load_wav(wav)
        result = asyncio.run(run_turn(url, pcm, realtime=realtime, time_limit=timeout))
        if out is not None and (result.audio or result.error is None):
            save_wav(out, result.audio)
    except TalkError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return 130

    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        for line in summary_lines(result, out if result.audio else None):
            print(line)
    if result.error is not None:
        error = result.error
        print(f"error {error.code} ({error.stage}): {error.message}", file=sys.stderr)
        return 1
    return 0
