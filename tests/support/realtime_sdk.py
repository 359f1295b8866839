"""The Realtime API's server events as the openai SDK models them: a check that an event sent by
a fake is one the SDK would read, field for field."""

from __future__ import annotations

from typing import Any, get_args

from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, ValidationError

SDK_EVENTS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(RealtimeServerEvent)[0])
}


def sdk_problems(event: dict[str, Any]) -> list[str]:
    """Why the SDK's model of `event` would not take it: a missing or mistyped field, or one
    the model does not know (the SDK keeps unknown fields, so it would not say so itself)."""
    model = SDK_EVENTS.get(str(event.get("type")))
    if model is None:
        return [f"no server event of type {event.get('type')!r} in the SDK"]
    try:
        parsed = model.model_validate(event)
    except ValidationError as err:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
    return unknown_fields(parsed, str(event["type"]))


SESSION_IDS = {"id", "object", "expires_at"}
"""OpenAI's session.created / .updated carry the session's id, object and expiry (as the SDK's
RealtimeSessionCreateResponse has them), but the SDK types those events' session as the
request's shape, which has none: not counted as unknown."""


def unknown_fields(value: Any, where: str) -> list[str]:
    if isinstance(value, BaseModel):
        known = SESSION_IDS if where.endswith(("created.session", "updated.session")) else set()
        found = [f"{where}.{name}" for name in value.model_extra or {} if name not in known]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{where}.{name}")
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, f"{where}[{i}]")]
    return []
