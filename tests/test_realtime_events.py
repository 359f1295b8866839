"""The Realtime front end's pieces without a server: `session.update` applied (or refused) as
the session core's commands, and the server events of a response, each validated against the
openai SDK's own types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from voice_fsm.realtime.config import RealtimeConfig, apply
from voice_fsm.realtime.responses import ResponseEvents
from voice_fsm.realtime.wire import EventError, dump, parse

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CONFIG = RealtimeConfig(model="gpt-realtime", instructions="Be kind.", voice="alloy")


def update(session: dict[str, Any]) -> Any:
    return parse(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))


def test_server_vad_becomes_hands_free_replying_at_once_and_null_turns_it_off() -> None:
    vad = update({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
    applied, command = apply(CONFIG, vad.session, None)
    assert command.session.mode == "hands_free"
    assert applied.policy().auto
    assert applied.session().audio.input.turn_detection.type == "server_vad"  # as applied

    off = update({"audio": {"input": {"turn_detection": None}}})
    applied, command = apply(applied, off.session, None)
    assert command.session.mode == "push_to_talk"
    assert not applied.policy().auto
    updated = json.loads(applied.updated())
    SERVER_EVENT.validate_python(updated)
    assert updated["session"]["audio"]["input"]["turn_detection"] is None

    # An update that does not name turn_detection leaves it as it is.
    applied, command = apply(applied, update({"instructions": "Hi."}).session, None)
    assert command.session.mode == "push_to_talk"
    assert command.session.instructions == "Hi."


def test_text_output_and_a_voice_object_are_applied() -> None:
    request = update({"output_modalities": ["text"], "audio": {"output": {"voice": {"id": "v1"}}}})
    applied, command = apply(CONFIG, request.session, None)
    assert applied.policy().speak is False
    assert applied.voice == "v1"
    assert command.session.voice == "v1"


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        (
            {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            "unsupported_audio_format",
            "session.audio.input.format",
        ),
        (
            {"audio": {"output": {"format": {"type": "audio/pcma"}}}},
            "unsupported_audio_format",
            "session.audio.output.format",
        ),
        ({"instructions": "x" * 9000}, "invalid_value", "session.instructions"),
    ],
)
def test_what_cannot_be_applied_refuses_the_update(
    session: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(EventError) as refused:
        apply(CONFIG, update(session).session, "evt_1")
    assert (refused.value.error.code, refused.value.error.param) == (code, param)
    assert refused.value.error.event_id == "evt_1"
    SERVER_EVENT.validate_python(json.loads(dump(refused.value.event())))


def test_a_transcription_session_is_refused() -> None:
    request = parse(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
    with pytest.raises(EventError) as refused:
        apply(CONFIG, request.session, None)
    assert refused.value.error.code == "unsupported_session_type"


@pytest.mark.parametrize("speak", [True, False])
@pytest.mark.parametrize("status", ["completed", "cancelled", "failed"])
def test_every_event_of_a_response_is_the_sdks_shape(speak: bool, status: str) -> None:
    response = ResponseEvents(speak=speak, conversation_id="conv_1", previous_item_id="item_0")
    events = [*response.started(), *response.text_delta("Hello"), *response.audio_delta(b"\0\0")]
    events += response.finished(
        status,  # type: ignore[arg-type]
        reason="client_cancelled" if status == "cancelled" else None,
        error=("server_error", "provider-timeout") if status == "failed" else None,
    )
    data = [json.loads(dump(event)) for event in events]
    for event in data:
        SERVER_EVENT.validate_python(event)
    assert len({event["event_id"] for event in data}) == len(data)
    done = data[-1]["response"]
    assert done["status"] == status
    content = done["output"][0]["content"][0]
    assert content == (
        {"type": "output_audio", "transcript": "Hello"}
        if speak
        else {"type": "output_text", "text": "Hello"}
    )
    if status == "failed":
        assert done["status_details"]["error"] == {
            "type": "server_error",
            "code": "provider-timeout",
        }
    if status == "cancelled":
        assert done["status_details"]["reason"] == "client_cancelled"


def test_a_function_call_ends_the_message_and_is_an_output_item_of_its_own() -> None:
    response = ResponseEvents(speak=True, conversation_id="conv_1", previous_item_id="item_0")
    events = [*response.started(), *response.text_delta("Let me look.")]
    events += response.function_call("item_9", "call_1", "get_weather", '{"city":"Paris"}')
    events += response.text_delta("late")  # after the call: not this response's
    events += response.finished("completed")
    data = [json.loads(dump(event)) for event in events]
    for event in data:
        SERVER_EVENT.validate_python(event)
    kinds = [event["type"] for event in data]
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    done = data[-1]["response"]
    assert [item["type"] for item in done["output"]] == ["message", "function_call"]
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Let me look."}]
    call = done["output"][1]
    assert (call["id"], call["call_id"], call["arguments"]) == (
        "item_9",
        "call_1",
        '{"city":"Paris"}',
    )
    arguments_done = next(e for e in data if e["type"] == "response.function_call_arguments.done")
    assert (arguments_done["output_index"], arguments_done["name"]) == (1, "get_weather")
    added = [e for e in data if e["type"] == "conversation.item.added"]
    assert [e.get("previous_item_id") for e in added] == ["item_0", response.item_id]
