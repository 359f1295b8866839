"""A function call of a Realtime response, as its item and its events: the item added, its
arguments (in one delta: the session has them whole when it announces the call), done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openai import BaseModel
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemDone,
    RealtimeConversationItemFunctionCall,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)

from voice_fsm.realtime.wire import new_id


@dataclass(frozen=True)
class FunctionCall:
    response_id: str
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: str

    def item(
        self, status: Literal["in_progress", "completed"]
    ) -> RealtimeConversationItemFunctionCall:
        return RealtimeConversationItemFunctionCall(
            id=self.item_id,
            object="realtime.item",
            type="function_call",
            status=status,
            call_id=self.call_id,
            name=self.name,
            arguments=self.arguments if status == "completed" else "",
        )

    def events(self, previous_item_id: str | None) -> list[BaseModel]:
        opened, done = self.item("in_progress"), self.item("completed")
        where = {
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "call_id": self.call_id,
        }
        return [
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                event_id=new_id("event"),
                response_id=self.response_id,
                output_index=self.output_index,
                item=opened,
            ),
            ConversationItemAdded(
                type="conversation.item.added",
                event_id=new_id("event"),
                previous_item_id=previous_item_id,
                item=opened,
            ),
            ResponseFunctionCallArgumentsDeltaEvent.model_validate(
                {
                    "type": "response.function_call_arguments.delta",
                    "event_id": new_id("event"),
                    "delta": self.arguments,
                    **where,
                }
            ),
            ResponseFunctionCallArgumentsDoneEvent.model_validate(
                {
                    "type": "response.function_call_arguments.done",
                    "event_id": new_id("event"),
                    "arguments": self.arguments,
                    "name": self.name,
                    **where,
                }
            ),
            ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                event_id=new_id("event"),
                response_id=self.response_id,
                output_index=self.output_index,
                item=done,
            ),
            ConversationItemDone(
                type="conversation.item.done",
                event_id=new_id("event"),
                previous_item_id=previous_item_id,
                item=done,
            ),
        ]
