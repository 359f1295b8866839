"""The provider requests a turn made, by the providers' own ids, for the turn's log line.

An operator who wants to know why a turn was slow, or to quote it to the provider's support,
needs the ids the provider gave its requests (OpenAI's ``x-request-id``, a Realtime item or
response id). Adapters `note` them as they get them, and `adapters.openai.errors.translate`
notes the id of a request that failed (an error response carries one too); the session starts
a fresh list for each turn with `collect`. A context variable carries the list, because the
adapters are called from tasks the session starts for the turn (and those tasks' children),
which copy the context they are created in.
"""

from __future__ import annotations

from contextvars import ContextVar

from voice_fsm.errors import Stage

_turn_requests: ContextVar[list[dict[str, str]] | None] = ContextVar(
    "provider_requests", default=None
)


def collect() -> list[dict[str, str]]:
    """A new turn: what adapters note from now on, in this task and the tasks it starts
    afterwards, goes into the returned list."""
    requests: list[dict[str, str]] = []
    _turn_requests.set(requests)
    return requests


def note(stage: Stage, request_id: str | None) -> None:
    """A provider request of `stage` got the id `request_id` (nothing when it gave none; once
    when both the response and its error carry it)."""
    requests = _turn_requests.get()
    entry = {"stage": stage.value, "id": request_id or ""}
    if requests is not None and request_id and entry not in requests:
        requests.append(entry)
