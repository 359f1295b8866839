"""Who may connect, on a real uvicorn server: Host, Origin and credentials are checked before
the WebSocket upgrade, so a refused client gets an HTTP answer and no session.

Most tests run the app in this process (`uvicorn_config`, fake providers, the real
`websockets` client and httpx) so the session set and the log can be looked at directly; the
last ones run `voice-fsm serve` itself, for what only the whole process shows: its output
holds no secret, and it refuses to listen on every interface without a key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from structlog.testing import capture_logs
from websockets.exceptions import InvalidStatus

from voice_fsm.app import create_app
from voice_fsm.client_tokens import ClientTokens
from voice_fsm.endpoint import SessionEndpoint
from voice_fsm.server import uvicorn_config
from voice_fsm.settings import AuthSettings, ServerSettings, Settings

from session_harness import fake_pipeline, make_settings
from support.servers import (
    QUICK_FAKES,
    console_script,
    fake_env,
    free_port,
    run_talk,
    running_server,
    stop_process,
)

pytestmark = pytest.mark.integration

KEY = "integration-key-0123456789abcdef"
WRONG_KEY = "integration-key-0123456789abcdeX"
TIMEOUT = 5.0


@dataclass
class Served:
    port: int
    app: Starlette

    @property
    def endpoint(self) -> SessionEndpoint:
        endpoint: SessionEndpoint = self.app.state.endpoint
        return endpoint

    def ws(self, host: str = "127.0.0.1", query: str = "") -> str:
        return f"ws://{host}:{self.port}/ws{query}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=TIMEOUT
        )


def settings_with(
    *, keys: tuple[str, ...] = (), page_tokens: bool = False, **server: Any
) -> Settings:
    auth = AuthSettings(api_keys=list(keys), page_tokens=page_tokens)  # type: ignore[arg-type]
    return make_settings().model_copy(update={"server": ServerSettings(**server), "auth": auth})


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings, pipeline=fake_pipeline())
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the server
            await asyncio.sleep(0.01)
    try:
        yield Served(port, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def open_server() -> AsyncIterator[Served]:
    """No API keys; `voice.test` is an allowed host name besides loopback."""
    async with serving(settings_with(allowed_hosts=["voice.test"])) as served:
        yield served


@pytest.fixture
async def keyed_server() -> AsyncIterator[Served]:
    async with serving(settings_with(keys=(KEY,))) as served:
        yield served


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def refused(url: str, **options: Any) -> websockets.http11.Response:
    """The HTTP answer to an upgrade the server refuses."""
    with pytest.raises(InvalidStatus) as caught:
        async with (
            asyncio.timeout(TIMEOUT),
            websockets.connect(url, proxy=None, open_timeout=TIMEOUT, **options),
        ):
            pass
    return caught.value.response


def body(response: websockets.http11.Response) -> Any:
    return json.loads(response.body)


async def session_created(served: Served, url: str, **options: Any) -> dict[str, Any]:
    """Open a session, check the server holds it while open, and close it."""
    async with (
        asyncio.timeout(TIMEOUT),
        websockets.connect(url, proxy=None, open_timeout=TIMEOUT, **options) as ws,
    ):
        created: dict[str, Any] = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert len(served.endpoint.sessions) == 1
    return created


async def sessions_reported(served: Served) -> int:
    async with served.http() as http:
        health = await http.get("/healthz")
    assert health.status_code == 200
    count: int = health.json()["sessions"]
    return count


# ---------------------------------------------------------------- Origin


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_a_foreign_origin_gets_403_and_no_session(
    open_server: Served, logs: list[dict[str, Any]], origin: str
) -> None:
    response = await refused(open_server.ws(), origin=origin)
    assert response.status_code == 403
    assert body(response) == {"error": "origin-not-allowed"}
    assert open_server.endpoint.sessions == set()
    assert open_server.endpoint.slots.in_use == 0
    assert events(logs, "session.started") == []
    (refusal,) = events(logs, "access.refused")
    assert (refusal["status"], refusal["reason"], refusal["path"]) == (403, "origin", "/ws")
    assert await sessions_reported(open_server) == 0

    # The same client without that Origin gets its session: the refusal was the Origin's.
    await session_created(open_server, open_server.ws())
    assert len(events(logs, "session.started")) == 1


# ---------------------------------------------------------------- Host


async def test_a_rebinding_host_gets_403_on_the_websocket(
    open_server: Served, logs: list[dict[str, Any]]
) -> None:
    # The name resolves to this server (DNS rebinding): the socket goes to 127.0.0.1, but the
    # browser sends the attacker's name as Host, and as the Origin of the attacker's page.
    attacker = f"rebind.attacker.example:{open_server.port}"
    response = await refused(
        open_server.ws(host="rebind.attacker.example"),
        host="127.0.0.1",
        origin=f"http://{attacker}",
    )
    assert response.status_code == 403
    assert body(response) == {"error": "host-not-allowed"}
    assert open_server.endpoint.sessions == set()
    assert events(logs, "session.started") == []
    assert await sessions_reported(open_server) == 0


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/client", "/static/app.js"])
async def test_a_rebinding_host_gets_403_on_http_routes(open_server: Served, path: str) -> None:
    async with open_server.http() as http:
        foreign = await http.get(path, headers={"Host": "rebind.attacker.example"})
        own = await http.get(path)
    assert foreign.status_code == 403
    assert foreign.json() == {"error": "host-not-allowed"}
    assert own.status_code == 200


async def test_a_listed_host_and_its_own_origin_connect(open_server: Served) -> None:
    # ALLOWED_HOSTS=voice.test: a page served as http://voice.test:PORT talks back to it.
    own = f"http://voice.test:{open_server.port}"
    created = await session_created(
        open_server, open_server.ws(host="voice.test"), host="127.0.0.1", origin=own
    )
    assert created["protocol"] == 1
    # ... but another origin on that host is still foreign.
    response = await refused(
        open_server.ws(host="voice.test"), host="127.0.0.1", origin="http://voice.test:1"
    )
    assert response.status_code == 403


# ---------------------------------------------------------------- who may connect


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1", "http://127.0.0.1:{port}"),
        ("localhost", "http://localhost:{port}"),
        ("127.0.0.1", None),  # a program, not a browser
    ],
    ids=["page-127.0.0.1", "page-localhost", "program"],
)
async def test_the_own_page_and_a_program_connect(
    open_server: Served, host: str, origin: str | None
) -> None:
    options: dict[str, Any] = {"host": "127.0.0.1"}
    if origin is not None:
        options["origin"] = origin.format(port=open_server.port)
    created = await session_created(open_server, open_server.ws(host=host), **options)
    assert created["session_id"].startswith("sess_")


# ---------------------------------------------------------------- credentials


def assert_unauthorized(response: websockets.http11.Response | httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="voice-fsm"'


async def mint(served: Served, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with served.http() as http:
        return await http.post("/v1/client_tokens", headers=headers)


async def test_without_a_credential_the_websocket_gets_401(
    keyed_server: Served, logs: list[dict[str, Any]]
) -> None:
    response = await refused(keyed_server.ws())
    assert_unauthorized(response)
    assert body(response) == {"error": "unauthorized", "detail": "credential missing"}
    assert events(logs, "session.started") == []
    assert keyed_server.endpoint.sessions == set()


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ],
    ids=["wrong-key", "key-prefix", "basic", "no-scheme"],
)
async def test_a_wrong_key_gets_401(keyed_server: Served, headers: dict[str, str]) -> None:
    response = await refused(keyed_server.ws(), additional_headers=headers)
    assert_unauthorized(response)
    assert holds_no_session(keyed_server)


def holds_no_session(served: Served) -> bool:
    return served.endpoint.sessions == set() and served.endpoint.slots.in_use == 0


async def test_a_bearer_key_connects(keyed_server: Served) -> None:
    await session_created(
        keyed_server, keyed_server.ws(), additional_headers={"Authorization": f"Bearer {KEY}"}
    )


async def test_a_minted_token_connects_once(keyed_server: Served) -> None:
    minted = await mint(keyed_server)
    assert minted.status_code == 200
    assert minted.headers["Cache-Control"] == "no-store"
    answer = minted.json()
    assert set(answer) == {"token", "expires_at"}
    assert isinstance(answer["token"], str)
    assert answer["token"].startswith("vft_")
    assert isinstance(answer["expires_at"], int)
    assert time.time() + 55 < answer["expires_at"] <= time.time() + 61  # default 60 s

    url = keyed_server.ws(query=f"?token={answer['token']}")
    await session_created(keyed_server, url)
    # Used: the same token again is refused before the upgrade.
    response = await refused(url)
    assert_unauthorized(response)
    assert body(response)["detail"] == "credential invalid"


async def test_uvicorns_own_log_lines_never_hold_the_token(
    keyed_server: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn logs each upgrade with its path and query at INFO: an operator who turns that
    # logger on must not find tokens in it.
    token = (await mint(keyed_server)).json()["token"]
    url = keyed_server.ws(query=f"?token={token}")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        await session_created(keyed_server, url)
        assert_unauthorized(await refused(url))
    lines = [record.getMessage() for record in caplog.records]
    assert any("/ws" in line and "[accepted]" in line for line in lines), lines
    assert any("/ws" in line and "401" in line for line in lines), lines
    assert token not in caplog.text
    assert token[4:24] not in caplog.text


async def test_an_expired_token_gets_401(keyed_server: Served) -> None:
    # Signed with the server's key, exactly as it would sign, but two minutes ago.
    def minter(offset_s: float) -> ClientTokens:
        return ClientTokens([KEY], ttl_s=60, clock=lambda: time.time() + offset_s)

    expired = minter(-120).mint()
    assert expired.expires_at < time.time()
    response = await refused(keyed_server.ws(query=f"?token={expired.token}"))
    assert_unauthorized(response)
    # The same minter with the clock set right makes tokens the server takes.
    fresh = minter(0).mint()
    await session_created(keyed_server, keyed_server.ws(query=f"?token={fresh.token}"))


@pytest.mark.parametrize(
    "token",
    ["vft_" + "A" * 75, "garbage", "", KEY],
    ids=["unsigned", "garbage", "empty", "api-key-as-token"],
)
async def test_a_forged_token_gets_401(keyed_server: Served, token: str) -> None:
    response = await refused(keyed_server.ws(query=f"?token={token}"))
    assert_unauthorized(response)


async def test_a_wrong_key_with_a_good_token_gets_401_and_keeps_the_token(
    keyed_server: Served,
) -> None:
    token = (await mint(keyed_server)).json()["token"]
    url = keyed_server.ws(query=f"?token={token}")
    response = await refused(url, additional_headers={"Authorization": f"Bearer {WRONG_KEY}"})
    assert_unauthorized(response)
    await session_created(keyed_server, url)


async def test_minting_needs_the_key(keyed_server: Served) -> None:
    assert_unauthorized(await mint(keyed_server, key=None))
    assert_unauthorized(await mint(keyed_server, key=WRONG_KEY))
    # A token is for /ws only: it does not mint more tokens.
    token = (await mint(keyed_server)).json()["token"]
    assert_unauthorized(await mint(keyed_server, key=token))


async def test_health_checks_answer_without_a_credential_and_the_rest_needs_one(
    keyed_server: Served,
) -> None:
    async with keyed_server.http() as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        for path in ("/", "/client", "/static/app.js"):
            assert_unauthorized(await http.get(path))
            ok = await http.get(path, headers={"Authorization": f"Bearer {KEY}"})
            assert ok.status_code == 200, path
        token = (await mint(keyed_server)).json()["token"]
        # A token in the query opens the WebSocket only, not the HTTP routes.
        assert_unauthorized(await http.get("/", params={"token": token}))
        page_token = await http.post("/v1/page_token", headers={"Origin": "http://127.0.0.1"})
        assert_unauthorized(page_token)  # VOICE_FSM_AUTH__PAGE_TOKENS is off


async def test_without_keys_there_is_nothing_to_mint(open_server: Served) -> None:
    async with open_server.http() as http:
        assert (await http.post("/v1/client_tokens")).status_code == 404
        assert (await http.post("/v1/page_token")).status_code == 204


async def test_page_tokens_let_the_served_page_in_and_no_other(logs: list[dict[str, Any]]) -> None:
    async with serving(settings_with(keys=(KEY,), page_tokens=True)) as served:
        own = f"http://127.0.0.1:{served.port}"
        async with served.http() as http:
            for path in ("/", "/client", "/static/app.js"):
                assert (await http.get(path)).status_code == 200, path
            assert_unauthorized(await http.post("/v1/client_tokens"))
            given = await http.post("/v1/page_token", headers={"Origin": own})
            no_origin = await http.post("/v1/page_token")
            foreign = await http.post("/v1/page_token", headers={"Origin": "https://evil.example"})
            rebound = await http.post(
                "/v1/page_token",
                headers={
                    "Origin": "http://rebind.attacker.example",
                    "Host": "rebind.attacker.example",
                },
            )
        assert given.status_code == 200
        assert given.headers["Cache-Control"] == "no-store"
        token = given.json()["token"]
        assert (no_origin.status_code, no_origin.json()) == (403, {"error": "origin-required"})
        assert (foreign.status_code, foreign.json()) == (403, {"error": "origin-not-allowed"})
        assert (rebound.status_code, rebound.json()) == (403, {"error": "host-not-allowed"})

        assert_unauthorized(await refused(served.ws(), origin=own))  # /ws still needs one
        url = served.ws(query=f"?token={token}")
        await session_created(served, url, origin=own)
        assert_unauthorized(await refused(url, origin=own))
    assert len(events(logs, "session.started")) == 1


# ---------------------------------------------------------------- the process: secrets, bind


def test_no_key_or_token_appears_in_the_servers_output(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    # Debug level: the most the server ever writes.
    env = fake_env(**QUICK_FAKES, VOICE_FSM_AUTH__API_KEYS=KEY, VOICE_FSM_LOG__LEVEL="debug")
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"{base}/healthz",
        env=env,
        cwd=tmp_path,
        log=log,
    ) as server:
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, trust_env=False, timeout=TIMEOUT) as http:
            token = http.post("/v1/client_tokens", headers=auth).json()["token"]
            unused = http.post("/v1/client_tokens", headers=auth).json()["token"]
            assert http.get("/", headers=auth).status_code == 200
            assert http.get("/", headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == (
                401
            )
        url = f"ws://127.0.0.1:{port}/ws?token={token}"

        first = run_talk(tmp_path, url)
        assert first.returncode == 0, (first.stderr, log.read_text()[-3000:])
        summary = json.loads(first.stdout)
        assert summary["error"] is None
        assert summary["transcript"] == "What is the capital of France?"
        assert summary["audio_bytes"] > 0

        again = run_talk(tmp_path, url)
        assert again.returncode == 2
        assert "HTTP 401" in again.stderr
        # The client does not print the token either (it may end up in a CI log).
        assert token not in again.stderr

        with_key = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws", "--api-key", KEY)
        assert with_key.returncode == 0, with_key.stderr
        wrong = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws", "--api-key", WRONG_KEY)
        assert wrong.returncode == 2
        bad_token = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws?token={unused}x")
        assert bad_token.returncode == 2
        assert stop_process(server) == 0

    output = log.read_text()
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    names = [record["event"] for record in records]
    # The server did log these requests, just not their secrets.
    assert names.count("turn.completed") == 2
    assert [r["reason"] for r in records if r["event"] == "access.refused"] == [
        "credential-invalid"
    ] * 4
    for secret in (KEY, WRONG_KEY, token, unused, token[4:20], KEY[:20]):
        assert secret not in output
    assert "Traceback" not in output


def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), "serve", *args],
        env=fake_env(**QUICK_FAKES, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_refuses_every_interface_without_a_key(tmp_path: Path) -> None:
    done = run_serve(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "VOICE_FSM_AUTH__API_KEYS" in done.stderr
    assert "--insecure-no-auth" in done.stderr
    assert "0.0.0.0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--insecure-no-auth"], {}),
        ([], {"VOICE_FSM_AUTH__API_KEYS": KEY}),
    ],
    ids=["insecure-no-auth", "with-a-key"],
)
def test_serve_on_every_interface_with_a_key_or_the_flag(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with running_server(
        [console_script(), "serve", "--host", "0.0.0.0", "--port", str(port), *args],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=fake_env(**QUICK_FAKES, **env),
        cwd=tmp_path,
        log=log,
    ) as server:
        assert stop_process(server) == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warnings = [r for r in records if r["event"] == "server.insecure"]
    if args:
        (warning,) = warnings
        assert warning["level"] == "warning"
        assert warning["host"] == "0.0.0.0"
    else:
        assert warnings == []
