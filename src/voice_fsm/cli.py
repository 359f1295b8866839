"""The `voice-fsm` command: `serve` runs the server, `engines` serves the embedded engines to
servers over the OpenAI API, `talk` runs one turn against a server, `latency` summarises the
`turn.completed` lines of log files.

Exit codes: 0 success, 1 the server answered a turn with an error, 2 a usage, configuration or
connection problem (one line on stderr, no traceback), 3 `serve` or `engines` could not listen
(the port is in use or not allowed, checked before the models load, or uvicorn's start-up
failed); `engines` exits 1 when its models fail to load.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from voice_fsm.cli_parser import PROG, WAV_FORMATS, build_parser, fail
from voice_fsm.serve_command import bind_failure, serve
from voice_fsm.settings_errors import env_var_for, format_settings_error

__all__ = [
    "PROG",
    "WAV_FORMATS",
    "bind_failure",
    "build_parser",
    "env_var_for",
    "format_settings_error",
    "latency",
    "main",
    "serve",
    "talk",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
            return fail("--ssl-certfile and --ssl-keyfile go together")
        return serve(
            host=args.host,
            port=args.port,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            insecure_no_auth=args.insecure_no_auth,
        )
    if args.command == "engines":
        from voice_fsm.engines.command import engines

        return engines(
            host=args.host,
            port=args.port,
            insecure_no_auth=args.insecure_no_auth,
            max_waiting=args.max_waiting,
        )
    if args.command == "latency":
        return latency(files=args.files, by=args.by, as_json=args.json, png=args.png)
    url = _talk_url(args.url)
    if url is None:
        return 2
    return talk(
        wav=args.wav,
        out=args.out,
        url=url,
        realtime=args.realtime,
        as_json=args.json,
        timeout=args.timeout,
        api_key=args.api_key or _first_api_key(),
        cafile=args.cafile,
    )


def latency(*, files: Sequence[str], by: str | None, as_json: bool, png: str | None) -> int:
    from voice_fsm.latency_report import ReportError, run

    try:
        code = run(files, by=by, as_json=as_json, png=png)
        sys.stdout.flush()
        return code
    except ReportError as err:
        return fail(str(err))
    except BrokenPipeError:  # `voice-fsm latency app.log | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _talk_url(given: str | None) -> str | None:
    """--url made a WebSocket URL (saying so on stderr when it was changed), or the one the
    settings describe; None after reporting bad settings."""
    from voice_fsm.server_address import ServerAddress, default_url, websocket_url

    if given is None:
        try:
            return default_url(ServerAddress())
        except (ValidationError, SettingsError) as err:
            fail(format_settings_error(err))
            return None
    url, note = websocket_url(given)
    if note is not None:
        print(f"{PROG}: {note}", file=sys.stderr)
    return url


def _first_api_key() -> str | None:
    from voice_fsm.settings import AuthSettings

    value = os.environ.get("VOICE_FSM_AUTH__API_KEYS")
    if not value:
        return None
    try:
        keys = AuthSettings(api_keys=value).secret_values()  # type: ignore[arg-type]
    except ValidationError:
        return None
    return keys[0] if keys else None


def talk(
    *,
    wav: str,
    out: str | None,
    url: str,
    realtime: bool,
    as_json: bool,
    timeout: float,
    api_key: str | None = None,
    cafile: str | None = None,
) -> int:
    import ssl

    from voice_fsm.talk import TalkError, load_wav, save_wav, summary_lines
    from voice_fsm.talk import talk as run_turn

    try:
        pcm = load_wav(wav)
        context = ssl.create_default_context(cafile=cafile) if cafile else None
        result = asyncio.run(
            run_turn(url, pcm, realtime=realtime, time_limit=timeout, api_key=api_key, ssl=context)
        )
        if out is not None and (result.audio or result.error is None):
            save_wav(out, result.audio)
    except TalkError as err:
        return fail(str(err))
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
