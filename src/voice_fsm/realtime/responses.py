"""One Realtime response as its server events: created, its one assistant message item with one
content part (audio with its transcript, or text), the deltas, and how it ended.
"""

from __future__ import annotations

import base64
from typing import Literal, TypedDict

from openai import BaseModel
from openai.types.realtime import (
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

from voice_fsm.realtime.wire import new_id

Status = Literal["completed", "cancelled", "failed"]
CancelReason = Literal["turn_detected", "client_cancelled"]


class _Where(TypedDict):
    response_id: str
    item_id: str
    output_index: int


class _Part(_Where):
    event_id: str
    content_index: int


class ResponseEvents:
    """The events of one response, in the order the API sends them."""

    def __init__(self, *, speak: bool, conversation_id: str, previous_item_id: str | None) -> None:
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.speak = speak
        self.text = ""
        self.audio_bytes = 0
        self._conversation_id = conversation_id
        self._previous_item_id = previous_item_id
        self._where = _Where(response_id=self.id, item_id=self.item_id, output_index=0)

    @property
    def modalities(self) -> list[Literal["text", "audio"]]:
        return ["audio"] if self.speak else ["text"]

    def started(self) -> list[BaseModel]:
        item = self._item("in_progress")
        part = (
            AddedPart(type="audio", transcript="")
            if self.speak
            else AddedPart(type="text", text="")
        )
        return [
            ResponseCreatedEvent(
                type="response.created",
                event_id=new_id("event"),
                response=self._response("in_progress", []),
            ),
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                event_id=new_id("event"),
                response_id=self.id,
                output_index=0,
                item=item,
            ),
            ConversationItemAdded(
                type="conversation.item.added",
                event_id=new_id("event"),
                previous_item_id=self._previous_item_id,
                item=item,
            ),
            ResponseContentPartAddedEvent(
                type="response.content_part.added",
                event_id=new_id("event"),
                content_index=0,
                part=part,
                **self._where,
            ),
        ]

    def text_delta(self, text: str) -> BaseModel:
        self.text += text
        if self.speak:
            return ResponseAudioTranscriptDeltaEvent(
                type="response.output_audio_transcript.delta",
                event_id=new_id("event"),
                content_index=0,
                delta=text,
                **self._where,
            )
        return ResponseTextDeltaEvent(
            type="response.output_text.delta",
            event_id=new_id("event"),
            content_index=0,
            delta=text,
            **self._where,
        )

    def audio_delta(self, pcm: bytes) -> BaseModel:
        self.audio_bytes += len(pcm)
        return ResponseAudioDeltaEvent(
            type="response.output_audio.delta",
            event_id=new_id("event"),
            content_index=0,
            delta=base64.b64encode(pcm).decode("ascii"),
            **self._where,
        )

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
        if text is not None:
            self.text = text
        item = self._item("completed" if status == "completed" else "incomplete")
        events: list[BaseModel] = []
        ids = _Part(event_id="", content_index=0, **self._where)
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
                output_index=0,
                item=item,
            ),
            ConversationItemDone(
                type="conversation.item.done",
                event_id="",
                previous_item_id=self._previous_item_id,
                item=item,
            ),
        ]
        details = None
        if status != "completed":
            details = RealtimeResponseStatus(
                type=status,
                reason=reason,
                error=StatusError(type=error[0], code=error[1]) if error else None,
            )
        done = self._response(status, [item])
        done.status_details = details
        events.append(ResponseDoneEvent(type="response.done", event_id="", response=done))
        for event in events:
            event.event_id = new_id("event")  # type: ignore[attr-defined]
        return events

    def _item(
        self, status: Literal["in_progress", "completed", "incomplete"]
    ) -> RealtimeConversationItemAssistantMessage:
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

    def _response(
        self, status: str, output: list[RealtimeConversationItemAssistantMessage]
    ) -> RealtimeResponse:
        return RealtimeResponse.model_validate(
            {
                "id": self.id,
                "object": "realtime.response",
                "status": status,
                "conversation_id": self._conversation_id,
                "output_modalities": self.modalities,
                "output": [item.model_dump(exclude_none=True) for item in output],
            }
        )
