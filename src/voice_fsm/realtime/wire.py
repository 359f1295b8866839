"""The Realtime API's events on the wire, as the `openai` SDK's own models
(`openai.types.realtime`) define them: client events parsed into them, server events built from
them, and the API's error event for what cannot be parsed or done.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, get_args

from openai import BaseModel
from openai.types.realtime import RealtimeClientEvent, RealtimeError, RealtimeErrorEvent
from pydantic import ValidationError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

CLIENT_EVENTS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(RealtimeClientEvent)[0])
}
"""Each client event's model, by its `type`."""


class EventError(Exception):
    """A client event that cannot be parsed or done: the `error` event it is answered with."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        param: str | None = None,
        kind: str = INVALID_REQUEST,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error = RealtimeError(
            type=kind, code=code, message=message[:500], param=param, event_id=event_id
        )

    def event(self) -> RealtimeErrorEvent:
        return RealtimeErrorEvent(type="error", event_id=new_id("event"), error=self.error)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def dump(event: BaseModel) -> str:
    """A server event as its JSON text frame: fields the event does not have are left out."""
    return json.dumps(event.model_dump(mode="json", exclude_none=True), separators=(",", ":"))


def parse(text: str) -> BaseModel:
    """A client's text frame as the SDK's model of its event; raises `EventError`."""
    try:
        data = json.loads(text)
    except ValueError:
        raise EventError("The event is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise EventError("An event must be a JSON object.", code="invalid_json")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    model = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise EventError(
            f"Invalid value: {str(kind)[:100]!r}. Supported values are: "
            + ", ".join(f"'{name}'" for name in sorted(CLIENT_EVENTS))
            + ".",
            code="invalid_value",
            param="type",
            event_id=event_id,
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first: Any = err.errors(include_url=False)[0]
        # Without the names of a union's members pydantic puts in the path.
        where = ".".join(str(part) for part in first["loc"] if not str(part)[:1].isupper())
        missing = first["type"] == "missing"
        raise EventError(
            f"{'Missing required parameter' if missing else 'Invalid value for'}: "
            f"'{where}' ({first['msg']}).",
            code="missing_required_parameter" if missing else "invalid_value",
            param=where,
            event_id=event_id,
        ) from None
