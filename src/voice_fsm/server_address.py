"""Where `talk` finds the server: the WebSocket URL from the settings `serve` reads, or from
what a user typed, and URLs as they may be shown (a client token in one is a credential)."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

WS_PATH = "/ws"


class ServerAddress(BaseSettings):
    """The server's host and port as `voice-fsm serve` reads them (VOICE_FSM_HOST and
    VOICE_FSM_PORT, from the environment or `.env`), and nothing else of its settings."""

    model_config = SettingsConfigDict(
        env_prefix="VOICE_FSM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


def client_host(host: str) -> str:
    """How a client on this machine names a server bound to `host`, in a URL: a wildcard
    address (0.0.0.0, ::) becomes the loopback address of its family, an IPv6 address gets
    brackets, a name stays as it is."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def default_url(settings: ServerAddress | None = None) -> str:
    """The WebSocket of the server this machine's settings describe."""
    settings = settings or ServerAddress()
    return f"ws://{client_host(settings.host)}:{settings.port}{WS_PATH}"


def websocket_url(url: str) -> tuple[str, str | None]:
    """`url` made a WebSocket URL of the server, and a note saying what was changed, if
    anything: the page's address (http://host:port, or no scheme at all) becomes ws://host:port/ws,
    https becomes wss. A path other than / is left alone (a proxy may serve /ws elsewhere)."""
    original = url
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme)
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    fixed = urlunsplit(parts._replace(scheme=scheme, path=path))
    if fixed == original:
        return url, None
    return fixed, f"using {shown_url(fixed)} (the server's WebSocket is at {WS_PATH})"


def shown_url(url: str) -> str:
    """`url` for a message: a client token in its query is a credential, never printed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    query = [
        (name, "***" if name == "token" else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def has_token(url: str) -> bool:
    """Whether `url` carries a client token in its query."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return False
    return any(name == "token" for name, _ in parse_qsl(query))
