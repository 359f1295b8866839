"""The page against a server that checks who connects, in a real browser.

Before each connection the page asks the server that served it for a client token
(POST /v1/page_token): a server without API keys answers 204 and the page connects as before;
with keys and VOICE_FSM_AUTH__PAGE_TOKENS=true it gets a single-use token and passes it as
`?token=`; with keys and page tokens off it is refused (401), says so, and opens no socket.

Each test opens a blank page first, then the page with its listeners in place, so every request
the page makes is seen from its first one on. Chromium or Playwright missing: skipped, except
under CI=true.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import NewPage
from support.browser import BrowserPage, Server, serving, tone_pcm, write_wav
from support.servers import fake_env

pytestmark = [pytest.mark.browser, pytest.mark.integration]

API_KEY = "vfk-browser-access-0123456789"
TOKEN_PATH = "/v1/page_token"
# What Chromium logs for the page's refused token request (a 4xx answer is a console error).
REFUSED_TOKEN = r"Failed to load resource: the server responded with a status of 401"


def server_env(**extra: str) -> dict[str, str]:
    return fake_env(**extra)


@dataclass
class Watch:
    """What the page asked for and logged after `watching` reloaded it."""

    token_answers: list[int] = field(default_factory=list)  # statuses of POST /v1/page_token
    socket_urls: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # every console message, any level

    def on_response(self, response: Any) -> None:
        request = response.request
        if request.method == "POST" and request.url.endswith(TOKEN_PATH):
            self.token_answers.append(response.status)

    def on_console(self, message: Any) -> None:
        self.console.append(f"{message.type}: {message.text}")


def watching(bp: BrowserPage, url: str, *, page_headers: dict[str, str] | None = None) -> Watch:
    """Open `url` with the listeners in place. With `page_headers`, the page's own
    files (GET / and /static/*) are fetched with them: a sign-in proxy in front of the server."""
    watch = Watch()
    page = bp.page
    page.on("response", watch.on_response)
    page.on("websocket", lambda ws: watch.socket_urls.append(ws.url))
    page.on("console", watch.on_console)
    if page_headers is not None:

        def with_headers(route: Any) -> None:
            request = route.request
            if request.method == "GET":
                route.continue_(headers={**request.headers, **page_headers})
            else:
                route.continue_()

        page.route(re.compile(r"^http://127\.0\.0\.1:\d+/(static/.*)?$"), with_headers)
    page.goto(url)
    return watch


def log_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def events_named(server: Server, name: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(server) if line.get("event") == name]


def socket_refusal(server: Server, query: str = "") -> int:
    """The HTTP status a WebSocket client without a key gets for /ws (with `query`)."""
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/ws{query}", open_timeout=5).close()
    status: int = refused.value.response.status_code
    return status


def live_sessions(server: Server) -> int:
    sessions: int = httpx.get(f"{server.url}healthz", timeout=5).json()["sessions"]
    return sessions


def test_page_tokens_let_the_page_connect_and_talk(new_page: NewPage, tmp_path: Path) -> None:
    """Keys set and page tokens on: the page gets a token, connects with it, and a turn works."""
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))
    env = server_env(VOICE_FSM_AUTH__API_KEYS=API_KEY, VOICE_FSM_AUTH__PAGE_TOKENS="true")

    with serving(tmp_path, env) as server, new_page("about:blank", wav) as bp:
        # The page has no key: without a token, /ws is closed to it.
        assert socket_refusal(server) == 401

        watch = watching(bp, server.url)
        bp.wait_connected()
        assert watch.token_answers == [200], watch
        (socket_url,) = watch.socket_urls
        match = re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws\?token=(vft_[A-Za-z0-9_-]+)", socket_url)
        assert match, socket_url
        token = match.group(1)
        assert live_sessions(server) == 1

        # A push-to-talk turn: the reply arrives and is played.
        bp.hold_talk(0.8)
        bp.wait_for(
            "voiceFsm.state === 'idle' && voiceFsm.lastMetrics !== null"
            " && voiceFsm.lastMetrics.turn === 1",
            "turn 1 is over",
        )
        assert bp.hook("lastError") is None, bp.describe()
        (done,) = bp.received("response.done", turn=1)
        assert done["text"] == "The capital of France is Paris."
        assert bp.page.locator("#reply").inner_text().strip() == done["text"]
        assert not bp.page.locator("#error").is_visible()

        # The token is for one connection: used once, it opens nothing more.
        assert socket_refusal(server, f"?token={token}") == 401
        # The page never logs its token; nor does the server.
        assert not [line for line in watch.console if token in line], watch.console
        bp.finish()

    text = server.log.read_text(errors="replace")
    assert token not in text
    assert "Traceback" not in text, server.output()
    (completed,) = events_named(server, "turn.completed")
    assert completed["outcome"] == "ok", completed


def test_without_page_tokens_the_page_says_it_is_not_allowed(
    new_page: NewPage, tmp_path: Path
) -> None:
    """Keys set and page tokens off: the page's token request is refused (401); the page says
    why, opens no socket, and keeps trying with its backoff; the server makes no session.

    Such a server refuses the page itself too (401 for GET /): here its files are fetched with
    the key, as a sign-in proxy in front of it would, so the page runs and meets the refusal.
    """
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))
    env = server_env(VOICE_FSM_AUTH__API_KEYS=API_KEY)

    with (
        serving(tmp_path, env) as server,
        new_page("about:blank", wav, allowed_console_errors=[REFUSED_TOKEN]) as bp,
    ):
        assert httpx.get(server.url, timeout=5).status_code == 401
        watch = watching(bp, server.url, page_headers={"Authorization": f"Bearer {API_KEY}"})
        bp.wait_for(
            "document.querySelector('#error').dataset.code === 'not-allowed'",
            "the page shows that it may not connect",
        )
        error = bp.page.locator("#error")
        assert error.is_visible()
        shown = error.inner_text()
        assert "HTTP 401" in shown, shown
        assert "VOICE_FSM_AUTH__PAGE_TOKENS" in shown, shown
        assert bp.page.evaluate("voiceFsm.refused") == {"status": 401, "error": "unauthorized"}
        assert bp.page.locator("#talk").is_disabled()

        # It tries again after the first backoff step (1 s), and is refused again.
        bp.wait_for(
            "document.querySelector('#connection').textContent.startsWith('Not allowed')",
            "the connection status says it is not allowed",
        )
        bp.pause(1.6)
        assert len(watch.token_answers) >= 2, watch
        assert set(watch.token_answers) == {401}, watch
        assert watch.socket_urls == [], watch
        assert bp.page.evaluate("voiceFsm.connection") == "closed"
        assert live_sessions(server) == 0
        bp.finish()

    refused = events_named(server, "access.refused")
    assert refused, server.output()
    assert {(r["path"], r["status"], r["reason"]) for r in refused} >= {
        (TOKEN_PATH, 401, "credential-missing")
    }, refused
    assert all(r["path"] != "/ws" for r in refused), refused  # the page never tried the socket
    assert events_named(server, "session.started") == []
    assert "Traceback" not in server.log.read_text(errors="replace")


def test_without_keys_the_page_needs_no_token(new_page: NewPage, tmp_path: Path) -> None:
    """No keys: the token request answers 204 once, and the socket opens without a token."""
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))

    with serving(tmp_path, server_env()) as server, new_page("about:blank", wav) as bp:
        watch = watching(bp, server.url)
        bp.wait_connected()
        assert watch.token_answers == [204], watch
        assert [url.split("/", 3)[3] for url in watch.socket_urls] == ["ws"], watch
        bp.finish()
    assert events_named(server, "access.refused") == []
