"""Realtime client secrets on a real uvicorn server with API keys: minted by the stock `openai`
SDK's `client.realtime.client_secrets.create()`, used as the SDK's api_key (a Bearer) or as a
browser does (the `openai-insecure-api-key.` subprotocol beside `realtime`), refused when
expired, forged or from a foreign page, and never written to the log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import uvicorn
import websockets
from openai import AsyncOpenAI
from openai.types.realtime import ClientSecretCreateResponse, RealtimeServerEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from structlog.testing import capture_logs
from websockets.exceptions import InvalidStatus

from voice_fsm.app import create_app
from voice_fsm.client_secrets import MAX_STORED_BYTES, RealtimeSecrets, SecretsFull
from voice_fsm.server import uvicorn_config
from voice_fsm.settings import AuthSettings, Settings

from session_harness import fake_pipeline, make_settings
from support.servers import free_port

pytestmark = pytest.mark.integration

KEY = "integration-key-0123456789abcdef"
TIMEOUT = 5.0
MODEL = "gpt-realtime"
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
KEY_PROTOCOL = "openai-insecure-api-key."


@dataclass
class Served:
    port: int
    app: Starlette

    @property
    def realtime(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model={MODEL}"

    def sdk(self, key: str = KEY) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=key,
            base_url=f"http://127.0.0.1:{self.port}/v1",
            websocket_base_url=f"ws://127.0.0.1:{self.port}/v1",
            max_retries=0,
        )

    async def mint(self, key: str = KEY, **params: Any) -> ClientSecretCreateResponse:
        async with self.sdk(key) as client:
            return await client.realtime.client_secrets.create(**params)


def keyed_settings(*keys: str) -> Settings:
    auth = AuthSettings(api_keys=list(keys))  # type: ignore[arg-type]
    return make_settings().model_copy(update={"auth": auth})


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings, pipeline=fake_pipeline())
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield Served(port, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(keyed_settings(KEY)) as served:
        yield served


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


async def first_event(connection: Any) -> dict[str, Any]:
    """The next event of an SDK connection or a `websockets` one, checked with the SDK."""
    receive = getattr(connection, "recv_bytes", connection.recv)
    data: dict[str, Any] = json.loads(await asyncio.wait_for(receive(), TIMEOUT))
    SERVER_EVENT.validate_python(data)
    return data


async def refused(url: str, **options: Any) -> tuple[int, dict[str, Any]]:
    """The status and body of the HTTP answer to an upgrade the server refuses."""
    with pytest.raises(InvalidStatus) as caught:
        async with (
            asyncio.timeout(TIMEOUT),
            websockets.connect(url, proxy=None, open_timeout=TIMEOUT, **options),
        ):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body)


def browser(secret: str, **options: Any) -> dict[str, Any]:
    """How OpenAI's browser clients offer a secret."""
    return {"subprotocols": ["realtime", KEY_PROTOCOL + secret], **options}


# ---------------------------------------------------------------- minting and using


async def test_the_sdk_mints_a_secret_and_connects_with_it_as_its_key(served: Served) -> None:
    secret = await served.mint(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "realtime", "instructions": "Be terse.", "output_modalities": ["text"]},
    )
    assert secret.value.startswith("ek_")
    assert time.time() + 115 < secret.expires_at <= time.time() + 121
    assert secret.session.type == "realtime"
    assert secret.session.instructions == "Be terse."
    assert secret.session.output_modalities == ["text"]

    # The session it carries is in effect from session.created on.
    async with served.sdk(secret.value) as client:
        async with client.realtime.connect(model=MODEL) as connection:
            created = await first_event(connection)
            assert created["type"] == "session.created"
            assert created["session"]["instructions"] == "Be terse."
            assert created["session"]["output_modalities"] == ["text"]
            assert created["session"]["model"] == MODEL
        # As OpenAI's: a secret opens sessions until it expires, so a client can reconnect.
        async with client.realtime.connect(model=MODEL) as connection:
            assert (await first_event(connection))["type"] == "session.created"


async def test_without_a_body_the_secret_lasts_ten_minutes_with_the_default_session(
    served: Served,
) -> None:
    secret = await served.mint()
    assert time.time() + 595 < secret.expires_at <= time.time() + 601
    assert secret.session.type == "realtime"
    assert secret.session.audio is not None
    assert secret.session.audio.input is not None
    assert secret.session.audio.input.turn_detection is None  # the client commits


async def test_a_browser_passes_the_secret_as_a_subprotocol_and_gets_realtime(
    served: Served,
) -> None:
    secret = (await served.mint()).value
    async with websockets.connect(served.realtime, proxy=None, **browser(secret)) as ws:
        assert ws.subprotocol == "realtime"
        assert (await first_event(ws))["type"] == "session.created"


async def test_a_client_offering_realtime_with_a_bearer_key_gets_realtime(served: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(
        served.realtime, proxy=None, subprotocols=["realtime"], additional_headers=headers
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert (await first_event(ws))["type"] == "session.created"


# ---------------------------------------------------------------- refusals


async def test_an_expired_secret_gets_401(served: Served) -> None:
    # Signed with the server's key, as it signs, but 11 minutes ago for 10.
    minter = RealtimeSecrets([KEY], clock=lambda: time.time() - 660)
    expired = minter.mint(600).value
    assert await refused(served.realtime, **browser(expired)) == (
        401,
        {"error": "unauthorized", "detail": "credential invalid"},
    )
    bearer = {"additional_headers": {"Authorization": f"Bearer {expired}"}}
    assert (await refused(served.realtime, **bearer))[0] == 401
    # The same minter with its clock set right makes secrets the server takes.
    minter.clock = time.time
    async with websockets.connect(served.realtime, proxy=None, **browser(minter.mint(60).value)):
        pass


async def test_the_server_clock_ends_a_secret(served: Served) -> None:
    secret = (await served.mint(expires_after={"anchor": "created_at", "seconds": 10})).value
    served.app.state.realtime_secrets.clock = lambda: time.time() + 11
    assert (await refused(served.realtime, **browser(secret)))[0] == 401


async def forged_secrets(served: Served) -> list[str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
        minted = await http.post("/v1/client_tokens", headers={"Authorization": f"Bearer {KEY}"})
    real = (await served.mint()).value
    return [
        "ek_" + "A" * 76,  # unsigned
        real[:-2] + ("AA" if real[-2:] != "AA" else "BB"),  # tampered
        RealtimeSecrets(["another-key-0123456789abcdef"]).mint(60).value,  # another server's
        minted.json()["token"],  # a /ws client token is not a Realtime secret
        "",
    ]


async def test_forged_secrets_get_401_both_ways(served: Served) -> None:
    for forged in await forged_secrets(served):
        assert (await refused(served.realtime, **browser(forged)))[0] == 401, forged
        if forged:
            bearer = {"additional_headers": {"Authorization": f"Bearer {forged}"}}
            assert (await refused(served.realtime, **bearer))[0] == 401, forged


async def test_a_secret_opens_only_the_realtime_api(served: Served) -> None:
    secret = (await served.mint()).value
    bearer = {"Authorization": f"Bearer {secret}"}
    ws = f"ws://127.0.0.1:{served.port}/ws"
    assert (await refused(ws, additional_headers=bearer))[0] == 401
    assert (await refused(f"{ws}?token={secret}"))[0] == 401
    with pytest.raises(openai.AuthenticationError):  # nor does it mint more secrets
        await served.mint(secret)


async def test_an_api_key_in_the_subprotocol_is_refused(
    served: Served, logs: list[dict[str, Any]]
) -> None:
    status, body = await refused(served.realtime, **browser(KEY))
    assert (status, body["detail"]) == (401, "credential api key in subprotocol")
    (refusal,) = [entry for entry in logs if entry["event"] == "access.refused"]
    assert refusal["reason"] == "credential-api-key-in-subprotocol"
    assert KEY not in repr(logs)


async def test_a_foreign_origin_is_refused_even_with_a_valid_secret(served: Served) -> None:
    secret = (await served.mint()).value
    foreign = browser(secret, origin="https://evil.example")
    assert await refused(served.realtime, **foreign) == (403, {"error": "origin-not-allowed"})
    for origin in (f"http://127.0.0.1:{served.port}", "http://localhost:5173"):
        # The page's own origin, and a page on loopback, as for /ws.
        async with websockets.connect(
            served.realtime, proxy=None, **browser(secret, origin=origin)
        ) as ws:
            assert (await first_event(ws))["type"] == "session.created"


async def test_a_secret_carrying_a_session_is_refused_by_a_process_that_does_not_know_it(
    served: Served,
) -> None:
    # Minted with the same key by another process: its session is not here, so no session
    # opens without it.
    elsewhere = RealtimeSecrets([KEY]).mint(60, session='{"type":"realtime"}').value
    assert (await refused(served.realtime, **browser(elsewhere)))[0] == 401
    without_session = RealtimeSecrets([KEY]).mint(60).value
    async with websockets.connect(served.realtime, proxy=None, **browser(without_session)):
        pass


# ---------------------------------------------------------------- the request


@pytest.mark.parametrize(
    ("expires_after", "param"),
    [
        ({"anchor": "created_at", "seconds": 9}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 7201}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "600"}, "expires_after.seconds"),
        ({"anchor": "now", "seconds": 60}, "expires_after.anchor"),
    ],
)
async def test_an_expiry_out_of_bounds_is_a_400_in_openais_shape(
    served: Served, expires_after: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.mint(expires_after=expires_after)
    assert caught.value.param == param
    assert caught.value.code == "invalid_value"
    if param == "expires_after.seconds":
        assert "from 10 to 7200" in caught.value.message


async def test_the_bounds_themselves_are_accepted(served: Served) -> None:
    for seconds in (10, 7200):
        secret = await served.mint(expires_after={"anchor": "created_at", "seconds": seconds})
        assert time.time() + seconds - 5 < secret.expires_at <= time.time() + seconds + 1


@pytest.mark.parametrize(
    ("session", "code"),
    [
        ({"type": "transcription"}, "unsupported_session_type"),
        (
            {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            "unsupported_audio_format",
        ),
        (  # this server has no voice activity detector
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
            "turn_detection_unavailable",
        ),
        ({"type": "realtime", "output_modalities": ["video"]}, "invalid_value"),
    ],
)
async def test_a_session_that_could_not_be_applied_is_refused_at_minting(
    served: Served, session: dict[str, Any], code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.mint(session=session)
    assert caught.value.code == code


async def test_an_unknown_parameter_is_refused(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.mint(extra_body={"ttl": 60})
    assert (caught.value.code, caught.value.param) == ("unknown_parameter", "ttl")


async def test_minting_needs_an_api_key(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        await served.mint("not-the-key-0123456789abcdef")


async def test_without_api_keys_there_is_nothing_to_mint() -> None:
    async with serving(make_settings()) as served:
        with pytest.raises(openai.NotFoundError) as caught:
            await served.mint()
        assert caught.value.code == "auth_off"


def test_the_sessions_kept_for_secrets_are_bounded_and_freed_at_expiry() -> None:
    now = [1_800_000_000.0]
    store = RealtimeSecrets([KEY], clock=lambda: now[0])
    session = "x" * (MAX_STORED_BYTES // 4)
    first = [store.mint(60, session) for _ in range(4)]
    with pytest.raises(SecretsFull):
        store.mint(600, session)
    store.mint(600)  # a secret without a session keeps nothing
    now[0] += 60
    later = store.mint(600, session)  # the expired ones' room is free again
    assert all(store.check(minted.value) is None for minted in first)
    grant = store.check(later.value)
    assert grant is not None
    assert grant.session == session


# ---------------------------------------------------------------- the log


async def test_no_secret_is_ever_logged(
    served: Served, logs: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    # At DEBUG, uvicorn's WebSocket protocol logs every upgrade's headers.
    with caplog.at_level(logging.DEBUG, logger="uvicorn.error"):
        secret = (await served.mint(session={"type": "realtime"})).value
        async with websockets.connect(served.realtime, proxy=None, **browser(secret)) as ws:
            await first_event(ws)
        await refused(served.realtime, **browser(secret, origin="https://evil.example"))
        await refused(served.realtime, **browser(secret[:-4] + "AAAA"))
        bearer = {"Authorization": f"Bearer {KEY}"}
        async with websockets.connect(served.realtime, proxy=None, additional_headers=bearer):
            pass
    assert [entry["event"] for entry in logs if entry["event"].startswith("client_secret")] == [
        "client_secret.minted"
    ]
    assert any(entry["event"] == "session.started" for entry in logs)
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith("uvicorn")]
    assert any("sec-websocket-protocol: [redacted]" in line.lower() for line in server_lines)
    assert any("authorization: [redacted]" in line.lower() for line in server_lines)
    everything = repr(logs) + "\n".join(server_lines)
    assert secret not in everything
    assert secret[3:23] not in everything
    assert KEY not in everything
