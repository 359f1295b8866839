"""Running the app under uvicorn: the listening sockets, limits it enforces for us, TLS, and a
drain on SIGTERM.

`bind` takes the port before the models load (seconds), so a busy port fails at once; uvicorn
then listens on those sockets, and `DrainingServer` says where once it does.

uvicorn's own stop sends every WebSocket a 1012 close at once, cutting replies mid-sentence.
`DrainingServer` turns the first SIGTERM (or SIGINT) into a drain first: `/readyz` answers 503
and new sessions are refused, turns in flight finish (up to `VOICE_FSM_SERVER__DRAIN_S`), then
every session is closed with 1001 and uvicorn stops. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

from voice_fsm.logging_setup import get_logger
from voice_fsm.settings import Settings

SHUTDOWN_GRACE_S = 1.0
"""What uvicorn may still wait for after the drain (connections it must cut itself)."""
FORCED_APP_SHUTDOWN_S = 0.5
"""On a forced exit (a second signal), how long the app's own shutdown may still take."""
FDS_PER_SESSION = 3
"""A session's socket and its provider connections, roughly, for the file limit."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address of `host` on `port`, as uvicorn's
    asyncio server would bind them: SO_REUSEADDR, IPv6 sockets IPv6-only, and with port 0 the
    same port the first one got. Raises `OSError` (`socket.gaierror` for an unknown name)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(
            (info[0], info[1], info[2], info[3], info[4]) for info in infos
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bound_addresses(sockets: list[socket.socket]) -> list[str]:
    """`127.0.0.1:8000`, `[::1]:8000`: what each socket is bound to."""
    shown = []
    for sock in sockets:
        address, port = sock.getsockname()[:2]
        shown.append(
            f"[{address}]:{port}" if sock.family == socket.AF_INET6 else f"{address}:{port}"
        )
    return shown


def uvicorn_config(
    app: Any,
    settings: Settings,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # logging_setup owns the output
        "access_log": False,
        # uvicorn deprecates its legacy "websockets" protocol; this is its replacement. It
        # also answers a refused upgrade with our status (the denial-response extension).
        "ws": "websockets-sansio",
        # No permessage-deflate with clients: PCM audio does not compress, and deflating each
        # frame cost about 5 ms of CPU per turn and 60 KiB per session (make loadtest).
        "ws_per_message_deflate": False,
        # Rejected by the WebSocket parser from the frame's header, before it is read: 1009.
        "ws_max_size": settings.limits.max_message_bytes,
        # X-Forwarded-For is handled by the app, for the proxies in trusted_proxies only.
        "proxy_headers": False,
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        drain: Callable[[], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._listening = listening
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and not self.should_exit and self._listening is not None:
            self._listening()  # the sockets accept connections from here on

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it would send 1012 to every session now and re-raise the signal at
        # the end, which turns a clean drain into a death by signal.
        if self._draining is not None or self.should_exit or self._loop is None:
            self.should_exit = True
            self.force_exit = True
            return
        get_logger().info("server.stopping", signal=signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self.begin_drain)

    def begin_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:
            # uvicorn skips the app's shutdown on a forced exit; asyncio.run then cancels the
            # app's lifespan mid-wait, which Starlette reports as a failed shutdown with a
            # traceback. Run it instead (it closes the providers' clients), briefly.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORCED_APP_SHUTDOWN_S):
                    await self.lifespan.shutdown()

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        finally:
            self.should_exit = True


def raise_file_limit(settings: Settings) -> None:
    """Raise the soft limit on open files toward the hard one, so the session caps (and not
    the file limit, which drops connections without a word) decide who gets in."""
    log = get_logger()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.limits.max_sessions * FDS_PER_SESSION + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "limits.file_limit_low",
            open_files=soft,
            max_sessions=settings.limits.max_sessions,
            hint="raise `ulimit -n` or lower VOICE_FSM_LIMITS__MAX_SESSIONS",
        )
