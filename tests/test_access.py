"""The access policy, check by check: Host names, Origins, and which paths need a credential."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.datastructures import Headers

from voice_fsm.access import (
    AccessPolicy,
    bearer,
    host_name,
    is_loopback,
    query_token,
    take_query_token,
)
from voice_fsm.client_tokens import ClientTokens
from voice_fsm.log_redaction import CredentialRedaction
from voice_fsm.settings import AuthSettings, ServerSettings

from session_harness import make_settings

KEY = "test-api-key-0123456789"


def policy(
    *,
    host: str = "127.0.0.1",
    keys: tuple[str, ...] = (),
    page_tokens: bool = False,
    **server: Any,
) -> AccessPolicy:
    settings = make_settings().model_copy(
        update={
            "host": host,
            "server": ServerSettings(**server),
            "auth": AuthSettings(api_keys=list(keys), page_tokens=page_tokens),  # type: ignore[arg-type]
        }
    )
    tokens = ClientTokens(settings.auth.secret_values(), ttl_s=60)
    return AccessPolicy(settings, tokens)


# ---------------------------------------------------------------- host_name


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("example.com", "example.com"),
        ("example.com:8000", "example.com"),
        ("EXAMPLE.com:8000", "example.com"),
        (" localhost:80 ", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[2001:db8::5]:443", "2001:db8::5"),
    ],
)
def test_host_name(host: str, name: str) -> None:
    assert host_name(host) == name


# ---------------------------------------------------------------- Host


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8000",
        "LocalHost:8000",
        "127.0.0.1:8000",
        "127.0.0.2:8000",  # all of 127/8 is loopback
        "[::1]:8000",
        "app.localhost:8000",  # *.localhost resolves to loopback in browsers
    ],
)
def test_loopback_hosts_are_allowed_by_default(host: str) -> None:
    assert policy().host_allowed(host, "127.0.0.1")


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example",
        "rebind.attacker.example:8000",
        "localhost.attacker.example",
        "127.0.0.1.nip.io:8000",
        "0.0.0.0:8000",
        "",
        None,
    ],
)
def test_other_hosts_are_refused_by_default(host: str | None) -> None:
    assert not policy().host_allowed(host, "127.0.0.1")


def test_the_bound_address_is_allowed() -> None:
    assert policy(host="192.168.1.20").host_allowed("192.168.1.20:8000", None)
    assert not policy(host="192.168.1.20").host_allowed("192.168.1.21:8000", None)


def test_the_address_a_client_reached_is_allowed_when_bound_to_every_interface() -> None:
    everywhere = policy(host="0.0.0.0")
    assert everywhere.host_allowed("10.0.0.5:8000", "10.0.0.5")
    assert everywhere.host_allowed("[fd00::5]:8000", "fd00::5")
    assert not everywhere.host_allowed("0.0.0.0:8000", "10.0.0.5")
    assert not everywhere.host_allowed("voice.example.com", "10.0.0.5")


def test_allowed_hosts_adds_names_and_wildcards() -> None:
    listed = policy(allowed_hosts=["voice.example.com", "*.internal.example"])
    assert listed.host_allowed("voice.example.com", None)
    assert listed.host_allowed("VOICE.example.com:443", None)
    assert listed.host_allowed("a.internal.example:8000", None)
    assert listed.host_allowed("b.a.internal.example", None)
    assert not listed.host_allowed("internal.example", None)  # *. needs a subdomain
    assert not listed.host_allowed("evilinternal.example", None)
    assert not listed.host_allowed("example.com", None)
    assert listed.host_allowed("localhost:8000", None)  # loopback stays allowed


def test_a_star_allows_any_host() -> None:
    assert policy(allowed_hosts=["*"]).host_allowed("anything.example:1", None)


def test_allowed_hosts_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_fsm.settings import Settings

    monkeypatch.setenv("VOICE_FSM_SERVER__ALLOWED_HOSTS", "voice.example.com, *.corp.example")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.server.allowed_hosts == ["voice.example.com", "*.corp.example"]
    guard = AccessPolicy(settings, ClientTokens([], ttl_s=60))
    assert guard.host_allowed("x.corp.example", None)
    assert not guard.host_allowed("corp.example", None)


# ---------------------------------------------------------------- Origin


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8000",
        "http://localhost",
        "https://localhost:5173",  # a dev server on another loopback port
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://app.localhost:3000",
        "HTTP://LOCALHOST:8000/",
    ],
)
def test_loopback_origins_are_allowed(origin: str) -> None:
    assert policy().origin_allowed(origin, "127.0.0.1:8000")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://evil.example:8000",
        "null",  # sandboxed frames, file: pages, some redirects
        "file://",
        "chrome-extension://abcdef",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io:8000",
        "",
        "not a url",
    ],
)
def test_foreign_origins_are_refused(origin: str) -> None:
    assert not policy().origin_allowed(origin, "127.0.0.1:8000")


def test_the_servers_own_origin_is_allowed() -> None:
    own = policy(host="0.0.0.0")
    assert own.origin_allowed("https://voice.example.com", "voice.example.com")
    assert own.origin_allowed("http://192.168.1.20:8000", "192.168.1.20:8000")
    # The port is part of the origin: another service on the same name is foreign.
    assert not own.origin_allowed("http://192.168.1.20:9000", "192.168.1.20:8000")
    assert not own.origin_allowed("https://evil.example", "voice.example.com")
    assert not own.origin_allowed("https://voice.example.com", None)


def test_allowed_origins_adds_exact_origins() -> None:
    listed = policy(allowed_origins=["https://app.example.com", "https://Admin.example.com/"])
    assert listed.origin_allowed("https://app.example.com", "voice.example.com")
    assert listed.origin_allowed("https://admin.example.com", "voice.example.com")
    assert not listed.origin_allowed("http://app.example.com", "voice.example.com")
    assert not listed.origin_allowed("https://app.example.com:8443", "voice.example.com")
    assert not listed.origin_allowed("https://evil.example", "voice.example.com")
    assert not listed.origin_allowed("null", "voice.example.com")


def test_null_only_when_listed_and_star_allows_any() -> None:
    assert policy(allowed_origins=["null"]).origin_allowed("null", "localhost:8000")
    assert policy(allowed_origins=["*"]).origin_allowed("https://evil.example", "x")


# ---------------------------------------------------------------- credentials


def test_without_keys_no_path_needs_a_credential() -> None:
    open_server = policy()
    assert not open_server.auth_required
    for path in ("/", "/ws", "/healthz", "/v1/client_tokens", "/static/app.js"):
        assert not open_server.needs_credential(path)


def test_with_keys_everything_but_health_checks_needs_one() -> None:
    guarded = policy(keys=(KEY,))
    assert guarded.auth_required
    assert not guarded.needs_credential("/healthz")
    assert not guarded.needs_credential("/readyz")
    for path in (
        "/",
        "/client",
        "/ws",
        "/static/app.js",
        "/v1/client_tokens",
        "/v1/page_token",
        "/healthz/",
        "/healthzz",
        "/nothing",
    ):
        assert guarded.needs_credential(path), path


def test_page_tokens_open_the_page_and_its_token_route_only() -> None:
    pages = policy(keys=(KEY,), page_tokens=True)
    for path in ("/", "/client", "/static/app.js", "/v1/page_token", "/healthz"):
        assert not pages.needs_credential(path), path
    for path in ("/ws", "/v1/client_tokens", "/staticx", "/other"):
        assert pages.needs_credential(path), path


def test_page_tokens_without_keys_change_nothing() -> None:
    assert not policy(page_tokens=True).needs_credential("/ws")


def test_key_valid_compares_every_key() -> None:
    guarded = policy(keys=(KEY, "second-api-key-abcdefgh"))
    assert guarded.key_valid(KEY)
    assert guarded.key_valid("second-api-key-abcdefgh")
    assert not guarded.key_valid(KEY[:-1])
    assert not guarded.key_valid(KEY + "x")
    assert not guarded.key_valid("")
    assert not guarded.key_valid("é" * 20)


@pytest.mark.parametrize(
    ("value", "credential"),
    [
        (f"Bearer {KEY}", KEY),
        (f"bearer {KEY}", KEY),
        (f"Bearer  {KEY} ", KEY),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Basic {KEY}", None),
        (KEY, None),
    ],
)
def test_bearer(value: str, credential: str | None) -> None:
    assert bearer(Headers({"authorization": value})) == credential


def test_no_authorization_header_is_no_bearer() -> None:
    assert bearer(Headers({})) is None


@pytest.mark.parametrize(
    ("query", "token"),
    [
        (b"token=vft_abc", "vft_abc"),
        (b"a=1&token=vft_abc&b=2", "vft_abc"),
        (b"token=vft_a%2Bb", "vft_a+b"),
        (b"tokens=vft_abc", None),
        (b"", None),
    ],
)
def test_query_token(query: bytes, token: str | None) -> None:
    assert query_token({"type": "websocket", "query_string": query}) == token


def test_take_query_token_removes_it_from_the_scope() -> None:
    scope = {"type": "websocket", "query_string": b"a=1&token=vft_secret&b=x%20y"}
    assert take_query_token(scope) == "vft_secret"
    assert scope["query_string"] == b"a=1&b=x+y"
    assert b"vft_secret" not in scope["query_string"]
    untouched = {"type": "websocket", "query_string": b"a=1"}
    assert take_query_token(untouched) is None
    assert untouched["query_string"] == b"a=1"


# ---------------------------------------------------------------- serve: bind without a key


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.1.1", "localhost", "LOCALHOST", "::1", "[::1]"]
)
def test_loopback_bind_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "192.168.1.20", "127.example.com", "127.0.0.1.nip.io", "::ffff:1"]
)
def test_exposed_bind_addresses(host: str) -> None:
    assert not is_loopback(host)


# ---------------------------------------------------------------- the handshake's debug log


def handshake_line(msg: str, *args: str) -> str:
    record = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, msg, args, None)
    assert CredentialRedaction().filter(record)  # redacted, never dropped
    return record.getMessage()


@pytest.mark.parametrize("header", ["Authorization", "sec-websocket-protocol", "Cookie"])
def test_credential_headers_are_redacted_in_the_handshake_log(header: str) -> None:
    assert handshake_line("< %s: %s", header, "Bearer sk-secret") == f"< {header}: [redacted]"


def test_other_headers_and_lines_are_logged_as_they_are() -> None:
    assert handshake_line("< %s: %s", "Host", "127.0.0.1:8000") == "< Host: 127.0.0.1:8000"
    assert handshake_line("= connection is %s", "OPEN") == "= connection is OPEN"
    line = handshake_line("< %s %s %s", "GET", "/v1/realtime?model=gpt-realtime", "HTTP/1.1")
    assert line == "< GET /v1/realtime?model=gpt-realtime HTTP/1.1"


def test_a_query_token_is_redacted_in_the_request_line() -> None:
    line = handshake_line("< %s %s %s", "GET", "/ws?a=1&token=vft_secret", "HTTP/1.1")
    assert line == "< GET /ws?[redacted] HTTP/1.1"
