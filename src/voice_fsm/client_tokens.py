"""Short-lived, single-use client tokens, so a browser can open `/ws` without an API key.

An app's backend, which holds an API key, mints a token (`POST /v1/client_tokens`) and hands
it to its page, which passes it as the `token` query parameter: browsers cannot set an
`Authorization` header on a WebSocket. A token is signed with a key derived from the API keys,
so any process with the same keys accepts it and a token store cannot be filled by minting;
only the tokens already used are remembered, until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PREFIX = "vft_"
_PAYLOAD = struct.Struct(">Q16s")  # expiry (unix seconds), nonce
_SIGNATURE_BYTES = 32
MAX_TOKEN_CHARS = 128
MAX_REMEMBERED = 200_000
"""Used tokens remembered at once; past this, tokens are refused until some expire."""


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs fixed-size payloads as `<prefix><base64url(payload + HMAC-SHA256)>`, with a key
    derived from each API key and `purpose`, so a token made for one purpose is worthless for
    another. The first key signs; every key verifies, so keys can be rotated one at a time."""

    def __init__(self, api_keys: Sequence[str], *, prefix: str, purpose: bytes) -> None:
        self.prefix = prefix
        self._keys = [hmac.new(key.encode(), purpose, hashlib.sha256).digest() for key in api_keys]

    def sign(self, payload: bytes) -> str:
        if not self._keys:
            raise RuntimeError("signed tokens need at least one API key")
        signature = hmac.new(self._keys[0], payload, hashlib.sha256).digest()
        return self.prefix + _b64(payload + signature)

    def payload(self, token: str, size: int) -> bytes | None:
        """The `size`-byte payload of a token this signer (with any key) made, else None."""
        if not token.startswith(self.prefix) or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            raw = _unb64(token[len(self.prefix) :])
        except ValueError:
            return None
        if len(raw) != size + _SIGNATURE_BYTES:
            return None
        payload, signature = raw[:size], raw[size:]
        valid = False
        for key in self._keys:  # each compared in constant time, every one tried
            expected = hmac.new(key, payload, hashlib.sha256).digest()
            valid |= hmac.compare_digest(expected, signature)
        return payload if valid else None


class ClientTokens:
    def __init__(
        self,
        api_keys: Sequence[str],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = TokenSigner(api_keys, prefix=PREFIX, purpose=b"voice-fsm client token v1")
        self._ttl_s = ttl_s
        self._clock = clock
        self._used: dict[bytes, int] = {}
        self._swept_at = 0.0

    def mint(self) -> MintedToken:
        expires_at = math.ceil(self._clock() + self._ttl_s)
        payload = _PAYLOAD.pack(expires_at, secrets.token_bytes(16))
        return MintedToken(self._signer.sign(payload), expires_at)

    def redeem(self, token: str) -> bool:
        """True once for a well-signed, unexpired token; False for anything else, including
        the same token again."""
        payload = self._signer.payload(token, _PAYLOAD.size)
        if payload is None:
            return False
        expires_at, nonce = _PAYLOAD.unpack(payload)
        now = self._clock()
        if expires_at <= now or nonce in self._used:
            return False
        self._forget_expired(now)
        if len(self._used) >= MAX_REMEMBERED:
            return False
        self._used[nonce] = expires_at
        return True

    def _forget_expired(self, now: float) -> None:
        # At most once a second: a sweep walks every remembered token.
        if now - self._swept_at < 1.0:
            return
        self._swept_at = now
        for nonce in [n for n, expiry in self._used.items() if expiry <= now]:
            del self._used[nonce]
