"""Client tokens: signed, single use, short-lived; checked against an injected clock."""

from __future__ import annotations

import base64

import pytest

from voice_fsm.client_tokens import PREFIX, ClientTokens

KEY = "k" * 16 + "-first-api-key"
OTHER_KEY = "o" * 16 + "-another-api-key"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tokens(clock: Clock, *keys: str, ttl_s: float = 60.0) -> ClientTokens:
    return ClientTokens(list(keys) or [KEY], ttl_s=ttl_s, clock=clock)


def test_a_minted_token_redeems_once(clock: Clock) -> None:
    store = tokens(clock)
    minted = store.mint()
    assert minted.token.startswith(PREFIX)
    assert store.redeem(minted.token) is True
    assert store.redeem(minted.token) is False
    clock.now += 10  # still refused later, well within its lifetime
    assert store.redeem(minted.token) is False


def test_each_token_is_different_and_each_redeems(clock: Clock) -> None:
    store = tokens(clock)
    minted = [store.mint().token for _ in range(20)]
    assert len(set(minted)) == 20
    assert all(store.redeem(token) for token in minted)


def test_expires_at_is_now_plus_the_lifetime(clock: Clock) -> None:
    assert tokens(clock, ttl_s=60).mint().expires_at == 1_800_000_060
    clock.now = 1_800_000_000.2  # rounded up to whole seconds, never shorter than asked
    assert tokens(clock, ttl_s=5).mint().expires_at == 1_800_000_006


def test_a_token_is_accepted_until_it_expires(clock: Clock) -> None:
    store = tokens(clock, ttl_s=30)
    early, late = store.mint(), store.mint()
    clock.now += 29.9
    assert store.redeem(early.token) is True
    clock.now = late.expires_at
    assert store.redeem(late.token) is False


def test_an_expired_token_is_refused_even_unused(clock: Clock) -> None:
    store = tokens(clock, ttl_s=1)
    minted = store.mint()
    clock.now += 3600
    assert store.redeem(minted.token) is False


def _flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token[len(PREFIX) :] + "=="))
    raw[index] ^= 0x01
    return PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "index",
    [0, 7, 8, 23, 24, -1],
    ids=["expiry-high", "expiry-low", "nonce-first", "nonce-last", "sig-first", "sig-last"],
)
def test_a_tampered_token_is_refused(clock: Clock, index: int) -> None:
    store = tokens(clock)
    minted = store.mint()
    tampered = _flip(minted.token, index)
    assert tampered != minted.token
    assert store.redeem(tampered) is False
    assert store.redeem(minted.token) is True  # the refusal did not use the real one up


def test_a_later_expiry_cannot_be_forged(clock: Clock) -> None:
    store = tokens(clock, ttl_s=1)
    minted = store.mint()
    raw = bytearray(base64.urlsafe_b64decode(minted.token[len(PREFIX) :] + "=="))
    raw[0:8] = (minted.expires_at + 86_400).to_bytes(8, "big")
    forged = PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    clock.now += 3600
    assert store.redeem(forged) is False


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "vft_",
        "vft_!!!!",
        "vft_" + "A" * 64,
        "vft_" + "A" * 200,
        "not-a-token",
        KEY,
        "vft_" + "é" * 10,
        "vft_%00",
    ],
)
def test_garbage_is_refused_without_raising(clock: Clock, garbage: str) -> None:
    assert tokens(clock).redeem(garbage) is False


def test_a_token_signed_with_another_key_is_refused(clock: Clock) -> None:
    foreign = tokens(clock, OTHER_KEY).mint()
    assert tokens(clock, KEY).redeem(foreign.token) is False


def test_a_token_of_the_rotated_out_key_is_accepted_while_that_key_is_listed(clock: Clock) -> None:
    # Rotation: the new key first (it signs), the old one still listed (it verifies).
    before = tokens(clock, OTHER_KEY).mint()
    after_rotation = tokens(clock, KEY, OTHER_KEY)
    assert after_rotation.redeem(before.token) is True
    new = after_rotation.mint()
    assert tokens(clock, KEY).redeem(new.token) is True  # signed by the first key
    assert tokens(clock, OTHER_KEY).redeem(new.token) is False


def test_used_tokens_are_forgotten_after_they_expire(clock: Clock) -> None:
    store = tokens(clock, ttl_s=10)
    for _ in range(50):
        assert store.redeem(store.mint().token)
    assert len(store._used) == 50
    clock.now += 11
    assert store.redeem(store.mint().token)
    assert len(store._used) == 1


def test_minting_without_keys_is_an_error(clock: Clock) -> None:
    store = ClientTokens([], ttl_s=60, clock=clock)
    with pytest.raises(RuntimeError):
        store.mint()
    assert store.redeem("vft_" + "A" * 75) is False
