"""`voice-fsm engines`: check what the engines need and the address, then serve them under
uvicorn while the models load. SIGTERM (or Ctrl-C) stops taking requests, lets those in
flight finish (up to `STOP_GRACE_S`) and exits 0; a second signal exits at once.

Exit codes: 0 stopped, 1 the models failed to load, 2 a usage or configuration problem,
3 the address cannot be listened on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError
from pydantic_settings import SettingsError

from voice_fsm.cli_parser import PROG, fail
from voice_fsm.settings_errors import format_settings_error

if TYPE_CHECKING:
    from voice_fsm.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
STOP_GRACE_S = 30.0
"""How long requests in flight (a reply being generated or spoken) may finish at a stop."""


def engines(
    *,
    host: str | None = None,
    port: int | None = None,
    insecure_no_auth: bool = False,
    max_waiting: int | None = None,
) -> int:
    from voice_fsm.adapters.local.packages import LOCAL_EXTRA_HINT, local_engines_installed
    from voice_fsm.settings import Settings

    # Not VOICE_FSM_HOST/PORT: those are `serve`'s, and both commands may share one .env.
    host = host if host is not None else DEFAULT_HOST
    port = port if port is not None else DEFAULT_PORT
    try:
        settings = Settings(host=host, port=port)
    except (ValidationError, SettingsError) as err:
        return fail(format_settings_error(err))
    if not local_engines_installed():
        return fail(f"the engines need the embedded engines. {LOCAL_EXTRA_HINT}")
    if importlib.util.find_spec("multipart") is None:
        return fail("the engines need python-multipart (uploads): pip install python-multipart")

    from voice_fsm.access import is_loopback
    from voice_fsm.server import bind

    exposed = not settings.auth.api_keys and not is_loopback(host)
    if exposed and not insecure_no_auth:
        return fail(
            f"refusing to listen on {host} without authentication: anyone who reaches it "
            "could use the engines. Set VOICE_FSM_AUTH__API_KEYS (and give `serve` the same "
            "key as VOICE_FSM_STT__API_KEY, VOICE_FSM_LLM__API_KEY and VOICE_FSM_TTS__API_KEY), "
            "or pass --insecure-no-auth"
        )
    try:
        sockets = bind(host, port)
    except OSError as err:
        reason = "no such host or address" if isinstance(err, socket.gaierror) else err.strerror
        print(f"{PROG}: cannot listen on {host}:{port}: {reason or err}", file=sys.stderr)
        return 3
    try:
        return _run(settings, sockets, exposed=exposed, max_waiting=max_waiting)
    finally:
        for sock in sockets:
            sock.close()


def _run(
    settings: Settings, sockets: list[socket.socket], *, exposed: bool, max_waiting: int | None
) -> int:
    from voice_fsm.engines.app import MAX_WAITING, create_engines_app
    from voice_fsm.logging_setup import configure_logging, get_logger
    from voice_fsm.server import DrainingServer, bound_addresses, uvicorn_config
    from voice_fsm.server_address import client_host

    configure_logging(settings.log)
    log = get_logger()
    if exposed:
        log.warning("engines.insecure", host=settings.host, hint="no authentication")
    failed: list[BaseException] = []
    server: DrainingServer | None = None

    def load_failed(err: BaseException) -> None:
        failed.append(err)
        if server is not None:
            server.should_exit = True

    app = create_engines_app(
        settings,
        max_waiting=max_waiting if max_waiting is not None else MAX_WAITING,
        load_failed=load_failed,
    )
    port = sockets[0].getsockname()[1]
    base_url = f"http://{client_host(settings.host)}:{port}/v1"

    def listening() -> None:
        log.info("engines.listening", base_url=base_url, addresses=bound_addresses(sockets))

    async def stop_taking_requests() -> None:
        # /readyz answers 503 to whoever asks before uvicorn closes the sockets, right after;
        # the requests in flight then finish (up to STOP_GRACE_S).
        app.state.stopping = True

    config = uvicorn_config(app, settings, timeout_graceful_shutdown=STOP_GRACE_S)
    server = DrainingServer(config, drain=stop_taking_requests, listening=listening)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):  # uvicorn's start-up failures
        server.run(sockets=sockets)
    if failed:
        print(f"{PROG}: the models could not be loaded: {failed[0]}", file=sys.stderr)
        return 1
    return 0 if server.started else 3
