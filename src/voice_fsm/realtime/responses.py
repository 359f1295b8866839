"""One Realtime response as its server events: created, its output items, the deltas, and how
it ended.

The output is the assistant's message (one content part: audio with its transcript, or text),
opened at the first text or audio, and the function calls of the client's tools the model made
(`function_call`): a call ends the message, and the response ends with the round's calls.
"""

from __future__ import annotations

import base64
from typing import Literal, TypedDict

from openai import BaseModel
from openai.types.realtime import (
    ConversationItem,
    ConversationItemAdded,
    ConversationItemDone,
    RealtimeConversationItemAssistantMessage,
    RealtimeResponse,
    RealtimeResponseStatus,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from openai.types.realtime.realtime_conversation_item_assistant_message import Content
from openai.types.realtime.realtime_response_status import Error as StatusError
from openai.types.realtime.response_content_part_added_event import Part as AddedPart
from openai.types.realtime.response_content_part_done_event import Part as DonePart

from voice_fsm.realtime.function_calls import FunctionCall
from voice_fsm.realtime.wire import new_id

Status = Literal["completed", "cancelled", "failed"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
CancelReason = Literal["turn_detected", "client_cancelled"]


class _Where(TypedDict):
    response_id: str
    item_id: str
    output_index: int


class _Part(_Where):
    event_id: str
    content_index: int


def _event_id() -> str:
    return new_id("event")


class ResponseEvents:
    """The events of one response, in the order the API sends them."""

    def __init__(
        self, *, speak: bool, conversation_id: str | None, previous_item_id: str | None
    ) -> None:
        self.id = new_id("resp")
        self.item_id = new_id("item")
        """The assistant message's id."""
        self.speak = speak
        self.text = ""
        self.audio_bytes = 0
        self.last_item = previous_item_id
        """The id of the last item of the conversation, as the client was told."""
        self.out_of_band = conversation_id is None
        """Not in the conversation (`conversation: "none"`): its items are not added to it."""
        self.output: list[ConversationItem] = []
        """The items done, in order."""
        self._conversation_id = conversation_id
        self._message: _Where | None = None
        self._message_done = False
        self._previous: str | None = None

    @property
    def modalities(self) -> list[Literal["text", "audio"]]:
        return ["audio"] if self.speak else ["text"]

    def started(self) -> list[BaseModel]:
        response = self._response("in_progress")
        return [
            ResponseCreatedEvent(type="response.created", event_id=_event_id(), response=response)
        ]

    def text_delta(self, text: str) -> list[BaseModel]:
        if self._message_done:
            return []  # after a call ended the message: not this response's
        events = self._open()
        self.text += text
        where = self._where()
        if self.speak:
            events.append(
                ResponseAudioTranscriptDeltaEvent(
                    type="response.output_audio_transcript.delta",
                    event_id=_event_id(),
                    content_index=0,
                    delta=text,
                    **where,
                )
            )
        else:
            events.append(
                ResponseTextDeltaEvent(
                    type="response.output_text.delta",
                    event_id=_event_id(),
                    content_index=0,
                    delta=text,
                    **where,
                )
            )
        return self._shown(events)

    def audio_delta(self, pcm: bytes) -> list[BaseModel]:
        if self._message_done:
            return []
        events = self._open()
        self.audio_bytes += len(pcm)
        events.append(
            ResponseAudioDeltaEvent(
                type="response.output_audio.delta",
                event_id=_event_id(),
                content_index=0,
                delta=base64.b64encode(pcm).decode("ascii"),
                **self._where(),
            )
        )
        return self._shown(events)

    def function_call(
        self, item_id: str, call_id: str, name: str, arguments: str
    ) -> list[BaseModel]:
        """A call of a client's tool: the message so far ends, the call is its own item."""
        events = self._close_message("completed")
        call = FunctionCall(self.id, len(self.output), item_id, call_id, name, arguments)
        previous = self.last_item
        self.last_item = previous if self.out_of_band else item_id
        self.output.append(call.item("completed"))
        return self._shown([*events, *call.events(previous)])

    def finished(
        self,
        status: Status,
        *,
        text: str | None = None,
        reason: CancelReason | None = None,
        error: tuple[str, str] | None = None,
    ) -> list[BaseModel]:
        """The closing events; `text` is the reply as the session kept it (else the deltas'),
        `error` the failure's (type, code)."""
        events: list[BaseModel] = []
        if text is not None and not self._message_done:
            if text and self._message is None:
                events += self._open()
            self.text = text
        events += self._close_message("completed" if status == "completed" else "incomplete")
        details = None
        if status != "completed":
            details = RealtimeResponseStatus(
                type=status,
                reason=reason,
                error=StatusError(type=error[0], code=error[1]) if error else None,
            )
        done = self._response(status)
        done.status_details = details
        events.append(ResponseDoneEvent(type="response.done", event_id=_event_id(), response=done))
        return self._shown(events)

    def _shown(self, events: list[BaseModel]) -> list[BaseModel]:
        """`events` as the client gets them: an out-of-band response's items are not the
        conversation's."""
        if not self.out_of_band:
            return events
        return [
            e for e in events if not isinstance(e, ConversationItemAdded | ConversationItemDone)
        ]

    def _where(self) -> _Where:
        assert self._message is not None
        return self._message

    def _open(self) -> list[BaseModel]:
        """The message's opening events, the first time there is something to put in it."""
        if self._message is not None or self._message_done:
            return []
        self._message = where = _Where(
            response_id=self.id, item_id=self.item_id, output_index=len(self.output)
        )
        item = self._item("in_progress")
        previous = self.last_item
        self.last_item = previous if self.out_of_band else self.item_id
        self._previous = previous
        part = (
            AddedPart(type="audio", transcript="")
            if self.speak
            else AddedPart(type="text", text="")
        )
        return [
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                event_id=_event_id(),
                response_id=self.id,
                output_index=where["output_index"],
                item=item,
            ),
            ConversationItemAdded(
                type="conversation.item.added",
                event_id=_event_id(),
                previous_item_id=previous,
                item=item,
            ),
            ResponseContentPartAddedEvent(
                type="response.content_part.added",
                event_id=_event_id(),
                content_index=0,
                part=part,
                **where,
            ),
        ]

    def _close_message(self, status: ItemStatus) -> list[BaseModel]:
        if self._message is None or self._message_done:
            return []
        self._message_done = True
        item, where = self._item(status), self._where()
        self.output.append(item)
        ids = _Part(event_id="", content_index=0, **where)
        events: list[BaseModel] = []
        if self.speak:
            events += [
                ResponseAudioDoneEvent(type="response.output_audio.done", **ids),
                ResponseAudioTranscriptDoneEvent(
                    type="response.output_audio_transcript.done", transcript=self.text, **ids
                ),
            ]
            part = DonePart(type="audio", transcript=self.text)
        else:
            events.append(
                ResponseTextDoneEvent(type="response.output_text.done", text=self.text, **ids)
            )
            part = DonePart(type="text", text=self.text)
        events += [
            ResponseContentPartDoneEvent(type="response.content_part.done", part=part, **ids),
            ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                event_id="",
                response_id=self.id,
                output_index=where["output_index"],
                item=item,
            ),
            ConversationItemDone(
                type="conversation.item.done",
                event_id="",
                previous_item_id=self._previous,
                item=item,
            ),
        ]
        for event in events:
            event.event_id = _event_id()  # type: ignore[attr-defined]
        return events

    def _item(self, status: ItemStatus) -> RealtimeConversationItemAssistantMessage:
        content = []
        if status != "in_progress":
            content = [
                Content(type="output_audio", transcript=self.text)
                if self.speak
                else Content(type="output_text", text=self.text)
            ]
        return RealtimeConversationItemAssistantMessage(
            id=self.item_id,
            object="realtime.item",
            type="message",
            role="assistant",
            status=status,
            content=content,
        )

    def _response(self, status: str) -> RealtimeResponse:
        return RealtimeResponse.model_validate(
            {
                "id": self.id,
                "object": "realtime.response",
                "status": status,
                "conversation_id": self._conversation_id,
                "output_modalities": self.modalities,
                "output": [item.model_dump(exclude_none=True) for item in self.output],
            }
        )
