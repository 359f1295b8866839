"""The token bucket, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from voice_fsm.rate_limit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Stands in for asyncio.sleep: time passes at once, and is recorded."""
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    # Handed to the bucket, never patched into asyncio: a server thread another module left
    # running would spin on a sleep that returns at once, and sleep on this clock.
    return Clock()


def test_a_full_bucket_allows_a_burst_then_refuses(clock: Clock) -> None:
    bucket = TokenBucket(5, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate(clock: Clock) -> None:
    bucket = TokenBucket(5, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.take()
    clock.now += 0.1  # half a token
    assert not bucket.take()
    clock.now += 0.1  # the other half
    assert bucket.take()
    assert not bucket.take()


def test_an_idle_bucket_holds_no_more_than_its_burst(clock: Clock) -> None:
    bucket = TokenBucket(5, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    assert sum(bucket.take() for _ in range(10)) == 3


def test_takes_over_time_average_the_rate(clock: Clock) -> None:
    bucket = TokenBucket(5, burst=5, clock=clock, sleep=clock.sleep)
    start = clock.now
    allowed = 0
    for ms in range(10_001):  # one attempt each millisecond for 10 s
        clock.now = start + ms / 1000
        allowed += bucket.take()
    # The burst, then 5 a second (the last one may miss by a rounding error).
    assert 5 + 5 * 10 - 1 <= allowed <= 5 + 5 * 10


async def test_wait_returns_at_once_while_there_are_tokens(clock: Clock) -> None:
    bucket = TokenBucket(400, burst=400, clock=clock, sleep=clock.sleep)
    for _ in range(400):
        await bucket.wait()
    assert clock.slept == []


async def test_wait_sleeps_until_a_token_is_due(clock: Clock) -> None:
    bucket = TokenBucket(4, burst=1, clock=clock, sleep=clock.sleep)
    start = clock.now
    await bucket.wait()
    assert clock.now == start
    await bucket.wait()
    assert clock.now - start == pytest.approx(0.25)
    for _ in range(8):
        await bucket.wait()
    # A sender that always waits is held to the rate: 10 messages in (10 - burst) / 4 s.
    assert clock.now - start == pytest.approx(9 / 4)
    assert all(s == pytest.approx(0.25) for s in clock.slept)


async def test_a_fractional_token_only_sleeps_for_the_rest(clock: Clock) -> None:
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    await bucket.wait()
    clock.now += 0.06  # 0.6 of a token back
    await bucket.wait()
    assert clock.slept == [pytest.approx(0.04)]
