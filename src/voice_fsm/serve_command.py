"""`voice-fsm serve`: check the settings and the address, then run the server under uvicorn
with the drain on SIGTERM. The heavy imports (the app, the providers' libraries) wait until
the port is known to be free."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from voice_fsm.cli_parser import PROG, fail
from voice_fsm.settings_errors import format_settings_error


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
        return fail(format_settings_error(err))

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
        return fail(
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
    from voice_fsm.server_address import client_host
    from voice_fsm.settings import unknown_setting_names

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
            return fail(str(err))

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
