"""Session slots: a global cap, a cap per client address, and none at all while draining."""

from __future__ import annotations

from voice_fsm.admission import Refusal, SessionSlots


def test_sessions_are_admitted_up_to_the_global_cap() -> None:
    slots = SessionSlots(max_sessions=3, max_per_client=10)
    assert [slots.take(f"10.0.0.{n}") for n in range(3)] == [None, None, None]
    assert slots.in_use == 3
    refusal = slots.take("10.0.0.9")
    assert refusal is not None
    assert refusal.reason == "server-full"
    assert refusal.retry_after_s > 0
    assert slots.in_use == 3  # a refusal holds nothing


def test_one_client_is_held_to_its_own_cap_while_others_get_in() -> None:
    slots = SessionSlots(max_sessions=10, max_per_client=2)
    assert slots.take("a") is None
    assert slots.take("a") is None
    refusal = slots.take("a")
    assert refusal is not None
    assert refusal.reason == "client-limit"
    assert refusal.retry_after_s > 0
    assert slots.take("b") is None
    assert slots.in_use == 3


def test_the_global_cap_is_reported_before_the_client_cap() -> None:
    slots = SessionSlots(max_sessions=2, max_per_client=2)
    slots.take("a")
    slots.take("a")
    refusal = slots.take("a")
    assert refusal == Refusal("server-full", refusal.retry_after_s if refusal else 0)


def test_giving_back_frees_the_slot_for_the_same_client_and_for_others() -> None:
    slots = SessionSlots(max_sessions=2, max_per_client=1)
    assert slots.take("a") is None
    assert slots.take("b") is None
    assert slots.take("c") is not None
    slots.give_back("a")
    assert slots.in_use == 1
    assert slots.take("c") is None
    slots.give_back("b")
    assert slots.take("a") is None  # a's own count went back to 0 as well
    assert slots.in_use == 2


def test_counts_go_back_to_zero_after_many_sessions() -> None:
    slots = SessionSlots(max_sessions=100, max_per_client=100)
    clients = [f"client-{n % 7}" for n in range(100)]
    for client in clients:
        assert slots.take(client) is None
    assert slots.take("late") is not None
    for client in clients:
        slots.give_back(client)
    assert slots.in_use == 0
    # Every client may take its full share again: nothing was left counted against it.
    assert all(slots.take("client-0") is None for _ in range(100))


def test_nothing_is_admitted_while_draining_and_sessions_still_end() -> None:
    slots = SessionSlots(max_sessions=10, max_per_client=10)
    assert slots.take("a") is None
    slots.draining = True
    refusal = slots.take("b")
    assert refusal is not None
    assert refusal.reason == "server-draining"
    assert refusal.retry_after_s > 0
    slots.give_back("a")
    assert slots.in_use == 0
    assert slots.take("a") is not None  # still draining
