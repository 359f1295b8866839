"""Realtime client secrets: OpenAI's ephemeral keys (`ek_...`), so a browser or an app can open
`/v1/realtime` without holding an API key.

A backend holding an API key mints one (`POST /v1/realtime/client_secrets`:
`client_secrets_route.py`) and hands it to its client.

A secret is presented as `Authorization: Bearer ek_...` or, from a browser, as the WebSocket
subprotocol `openai-insecure-api-key.ek_...` beside `realtime`. As OpenAI documents, a secret
opens any number of sessions until it expires (a client may reconnect with it); a session
already open outlives it. Secrets are signed (with a key derived from the API keys, apart from
the `/ws` client tokens') and checked without a lookup, so any process with the same keys
accepts them, except a secret carrying a session: that session is kept by the process that
minted it (bounded in bytes, until the secret expires), and another process refuses the secret
rather than open a session without it.
"""

from __future__ import annotations

import math
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from voice_fsm.client_tokens import TokenSigner
from voice_fsm.logging_setup import get_logger

SECRET_PREFIX = "ek_"
REALTIME_SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""The subprotocol prefix OpenAI's browser clients put the key (here: a client secret) in."""
MIN_TTL_S, DEFAULT_TTL_S, MAX_TTL_S = 10, 600, 7200
MAX_STORED_BYTES = 16 * 1024 * 1024
"""The sessions of unexpired secrets kept at once; past this, minting one is refused (503)."""
_PAYLOAD = struct.Struct(">Q16s?")  # expiry (unix seconds), nonce, carries a session

log = get_logger()


@dataclass(frozen=True)
class Grant:
    """What a valid secret lets its holder do: open a Realtime session, with `session` (a
    `session.update`'s session, as JSON text) applied first when the secret carries one."""

    expires_at: int
    session: str | None


@dataclass(frozen=True)
class MintedSecret:
    value: str
    expires_at: int


class SecretsFull(Exception):
    """Too many sessions are kept for unexpired secrets."""


class RealtimeSecrets:
    def __init__(self, api_keys: Sequence[str], *, clock: Callable[[], float] = time.time) -> None:
        self._signer = TokenSigner(
            api_keys, prefix=SECRET_PREFIX, purpose=b"voice-fsm realtime client secret v1"
        )
        self.clock = clock
        self._sessions: dict[bytes, tuple[int, str]] = {}
        self._stored_bytes = 0

    def mint(self, ttl_s: int, session: str | None = None) -> MintedSecret:
        """A secret valid for `ttl_s` seconds; raises `SecretsFull`."""
        now = self.clock()
        expires_at = math.ceil(now + ttl_s)
        nonce = secrets.token_bytes(16)
        if session is not None:
            self._forget_expired(now)
            if self._stored_bytes + len(session) > MAX_STORED_BYTES:
                raise SecretsFull
            self._sessions[nonce] = (expires_at, session)
            self._stored_bytes += len(session)
        payload = _PAYLOAD.pack(expires_at, nonce, session is not None)
        return MintedSecret(self._signer.sign(payload), expires_at)

    def check(self, value: str) -> Grant | None:
        """The grant of a well-signed, unexpired secret (as often as it is presented); None
        for anything else."""
        payload = self._signer.payload(value, _PAYLOAD.size)
        if payload is None:
            return None
        expires_at, nonce, carries_session = _PAYLOAD.unpack(payload)
        if expires_at <= self.clock():
            return None
        if not carries_session:
            return Grant(expires_at, None)
        kept = self._sessions.get(nonce)
        if kept is None:  # minted by another process, or before a restart
            log.info("client_secret.session_unknown")
            return None
        return Grant(expires_at, kept[1])

    def _forget_expired(self, now: float) -> None:
        for nonce, (expiry, session) in list(self._sessions.items()):
            if expiry <= now:
                del self._sessions[nonce]
                self._stored_bytes -= len(session)


def secret_in_subprotocols(offered: Sequence[str]) -> str | None:
    """The credential a browser client put in the `openai-insecure-api-key.` subprotocol."""
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None
