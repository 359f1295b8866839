"""Running a fake provider's app under uvicorn in a background thread, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

KEEP_ALIVE_S = 120
"""How long the fakes keep an idle client connection open. uvicorn's default is 5 s; an API
behind a CDN keeps them much longer (OpenAI does not document its figure)."""


@contextmanager
def serving_in_thread(app: ASGIApp, name: str, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free port in a daemon thread; yields its base URL (.../v1)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=0,
            ws="websockets-sansio",
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
