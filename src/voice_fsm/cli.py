"""The `voice-fsm` command: `serve` runs the server, `talk` runs one turn against it, `latency`
summarises the `turn.completed` lines of log files.

Exit codes: 0 success, 1 the server answered a turn with an error, 2 a usage, configuration or
connection problem (one line on stderr, no traceback), 3 `serve` could not listen (the port is
in use or not allowed, checked before the models load, or uvicorn's start-up failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from voice_fsm import __version__

PROG = "voice-fsm"
WAV_FORMATS = (
    "WAV files of 8, 16, 24 or 32-bit integer PCM or 32 or 64-bit float samples, at any "
    "sample rate, mono or with several channels (mixed down); they are sent as 16-bit 24 kHz mono"
)
"""What `talk` reads (talk.load_wav), for its --help and for the error on a file it cannot.
Here rather than in talk.py so that `serve` need not import the client (numpy, websockets)."""
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
    serve.add_argument("--ssl-certfile", help="serve https and wss with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen on a non-loopback address without VOICE_FSM_AUTH__API_KEYS",
    )

    talk = commands.add_parser(
        "talk",
        help="send a WAV file as one turn and show the reply",
        description=f"Send a WAV file as one push-to-talk turn and show the reply. It reads "
        f"{WAV_FORMATS}.",
    )
    talk.add_argument("--wav", required=True, help="the question: a WAV file (see above)")
    talk.add_argument("--out", help="save the spoken reply here (24 kHz mono WAV)")
    talk.add_argument(
        "--url",
        help="the server's WebSocket, ws[s]://HOST:PORT/ws (default: from VOICE_FSM_HOST and "
        "VOICE_FSM_PORT in the environment or .env, as serve reads them: ws://127.0.0.1:8000/ws "
        "unless they are set)",
    )
    talk.add_argument("--realtime", action="store_true", help="send audio at speaking pace")
    talk.add_argument("--json", action="store_true", help="print one JSON object")
    talk.add_argument(
        "--api-key",
        help="the server's API key (default: the first of the VOICE_FSM_AUTH__API_KEYS "
        "environment variable, if set; never read from .env, never printed)",
    )
    talk.add_argument("--cafile", help="trust this CA certificate for wss:// (PEM)")
    talk.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        help="seconds the turn may take, besides sending at --realtime pace (default: 30)",
    )

    latency = commands.add_parser(
        "latency",
        help="p50/p95/p99 per stage and outcomes from turn.completed log lines",
        description="Read turn.completed JSON lines from log files (or standard input) and "
        "print p50/p95/p99 per stage, outcome counts and error codes. Other lines are skipped "
        "and counted.",
    )
    latency.add_argument("files", nargs="*", metavar="FILE", help="log files; - or none: stdin")
    latency.add_argument(
        "--by", choices=("hour", "provider", "mode"), help="also one table per group"
    )
    latency.add_argument("--json", action="store_true", help="print one JSON object")
    latency.add_argument(
        "--png", metavar="FILE", help="draw the dashboard's charts (needs matplotlib)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
            return _fail("--ssl-certfile and --ssl-keyfile go together")
        return serve(
            host=args.host,
            port=args.port,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            insecure_no_auth=args.insecure_no_auth,
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
        return _fail(str(err))
    except BrokenPipeError:  # `voice-fsm latency app.log | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _talk_url(given: str | None) -> str | None:
    """--url made a WebSocket URL (saying so on stderr when it was changed), or the one the
    settings describe; None after reporting bad settings."""
    from voice_fsm.talk import ServerAddress, default_url, websocket_url

    if given is None:
        try:
            return default_url(ServerAddress())
        except (ValidationError, SettingsError) as err:
            _fail(format_settings_error(err))
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


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    insecure_no_auth: bool = False,
) -> int:
    from voice_fsm.server import bind
    from voice_fsm.settings import Settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as err:
        return _fail(format_settings_error(err))

    try:  # before the models load: a busy port should not cost their seconds
        sockets = bind(settings.host, settings.port)
    except OSError as err:
        print(f"{PROG}: {bind_failure(settings.host, settings.port, err)}", file=sys.stderr)
        return 3

    from voice_fsm.access import is_loopback

    exposed = not settings.auth.api_keys and not is_loopback(settings.host)
    if exposed and not insecure_no_auth:
        for sock in sockets:
            sock.close()
        return _fail(
            f"refusing to listen on {settings.host} without authentication: anyone who "
            "reaches it could use your providers. Set VOICE_FSM_AUTH__API_KEYS to one or "
            'more secrets (e.g. VOICE_FSM_AUTH__API_KEYS=$(python3 -c "import secrets; '
            'print(secrets.token_urlsafe(32))")), or pass --insecure-no-auth'
        )

    # Only now the heavy imports (the app, the providers' libraries): a second and more.
    from voice_fsm.app import create_app
    from voice_fsm.logging_setup import configure_logging, get_logger
    from voice_fsm.providers import ConfigError
    from voice_fsm.server import DrainingServer, bound_addresses, raise_file_limit, uvicorn_config
    from voice_fsm.settings import unknown_setting_names
    from voice_fsm.talk import client_host

    configure_logging(settings.log)
    log = get_logger()
    if exposed:
        log.warning(
            "server.insecure",
            host=settings.host,
            hint="no authentication on a non-loopback address (--insecure-no-auth)",
        )
    unknown = unknown_setting_names([*os.environ, *_dotenv_names(Path(".env"))])
    if unknown:
        get_logger().warning(
            "settings.unknown", names=unknown, hint="no setting reads these: check the spelling"
        )
    try:
        try:
            app = create_app(settings)
        except ConfigError as err:
            return _fail(str(err))

        raise_file_limit(settings)
        tls = ssl_certfile is not None
        port = sockets[0].getsockname()[1]  # the real one, also for --port 0
        where = f"{client_host(settings.host)}:{port}"
        page = f"{'https' if tls else 'http'}://{where}"
        log.info("server.starting", url=f"{'wss' if tls else 'ws'}://{where}/ws")
        addresses = bound_addresses(sockets)

        json_logs = settings.log.format == "json" or (
            settings.log.format == "auto" and not sys.stdout.isatty()
        )

        def listening() -> None:
            log.info("server.listening", url=page, addresses=addresses)
            if not (json_logs and _stderr_is_stdout_file()):  # the event says it there
                bound = "" if addresses == [where] else f"  (listening on {', '.join(addresses)})"
                print(f"open {page}{bound}", file=sys.stderr, flush=True)

        config = uvicorn_config(app, settings, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        server = DrainingServer(
            config,
            drain=lambda: app.state.endpoint.drain(settings.server.drain_s),
            listening=listening,
        )
        with contextlib.suppress(KeyboardInterrupt, SystemExit):  # uvicorn's start-up failures
            server.run(sockets=sockets)
        return 0 if server.started else 3
    finally:
        for sock in sockets:
            sock.close()


def _stderr_is_stdout_file() -> bool:
    """Whether stderr is the very file or pipe stdout writes to, not a terminal (`2>&1` into a
    log): a plain line there would be the one line of a JSON log that its readers cannot parse."""
    try:
        if sys.stderr.isatty():
            return False
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def bind_failure(host: str, port: int, err: OSError) -> str:
    """Why `serve` cannot listen on host:port, and what to do about it."""
    choose = (
        "choose another port with --port 8001, VOICE_FSM_PORT=8001 (environment or .env) "
        "or make run PORT=8001"
    )
    check_host = "check --host or VOICE_FSM_HOST"
    if isinstance(err, socket.gaierror):
        return f"cannot listen on {host}: no such host or address ({err.strerror}); {check_host}"
    if err.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another voice-fsm serve?): {choose}"
    if err.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need root): {choose}"
    if err.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine; {check_host}"
    return f"cannot listen on {host}:{port}: {err.strerror or err}"


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
