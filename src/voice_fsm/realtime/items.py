"""The Realtime API's conversation items over the session's history (`conversation.py`).

`conversation.item.create` adds a message (a user's or system's `input_text`, an assistant's
text) where the client says, or turns a user's `input_audio` into a turn as a commit does;
`truncate` cuts a spoken reply to the audio the client played (what the user heard, as on a
barge-in; the reply of a response still on, once that response ends), `delete` removes an
item, `retrieve` shows one as the history holds it. Each is an edit the session's driver runs
in order with the other commands, and its answer (or `error`) is sent from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from openai import BaseModel
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemCreateEvent,
    ConversationItemDeletedEvent,
    ConversationItemDeleteEvent,
    ConversationItemDone,
    ConversationItemRetrieveEvent,
    ConversationItemTruncatedEvent,
    ConversationItemTruncateEvent,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeConversationItemUserMessage,
)
from openai.types.realtime.realtime_server_event import ConversationItemRetrieved

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.conversation import Conversation, ConversationEdit, Item, new_item_id
from voice_fsm.events import ToolResultCommand
from voice_fsm.realtime.item_views import (
    audio_of,
    is_audio,
    message_of,
    not_found,
    realtime_item,
)
from voice_fsm.realtime.wire import EventError, dump, new_id
from voice_fsm.turn import Turn

if TYPE_CHECKING:
    from voice_fsm.realtime.render import Renderer
    from voice_fsm.session import Session

Commit = Callable[["Session", bytes, str], Awaitable[None]]


class Items:
    def __init__(self, renderer: Renderer, out: Callable[[str], Awaitable[None]], commit: Commit):
        self._renderer = renderer
        self._out = out
        self._commit = commit
        self.pending: list[ConversationItemTruncateEvent] = []
        """Truncates of the item of a response still on, done when it ends (`settle`)."""
        self._outputs: dict[str, str] = {}
        """The client's outputs of the calls handed over to it, by call id, until it asks for
        the response that uses them."""

    async def create(self, session: Session, event: ConversationItemCreateEvent) -> None:
        item, event_id = event.item, event.event_id
        item_id = item.id or new_item_id()
        if isinstance(item, RealtimeConversationItemUserMessage) and is_audio(item):
            if event.previous_item_id is not None:
                raise EventError(
                    "An input_audio item is a turn of its own: it goes last, without "
                    "previous_item_id.",
                    code="unsupported_value",
                    param="previous_item_id",
                    event_id=event_id,
                )
            await self._commit(session, audio_of(item, event_id), item_id)
            return
        if isinstance(item, RealtimeConversationItemFunctionCallOutput):
            await self._output(item, item_id, event.previous_item_id, event_id)
            return
        message = message_of(item, event_id)
        after = event.previous_item_id

        async def add(conversation: Conversation, turn: Turn) -> None:
            try:
                conversation.add_message(item_id, message, after)
            except KeyError:
                await self._refuse(not_found(after or "", "previous_item_id", event_id))
                return
            previous = self._renderer.added(item_id, after)
            view = realtime_item(Item(item_id, message, 0))
            await self._emit(
                ConversationItemAdded(
                    type="conversation.item.added",
                    event_id=new_id("event"),
                    previous_item_id=previous,
                    item=view,
                )
            )
            await self._emit(
                ConversationItemDone(
                    type="conversation.item.done",
                    event_id=new_id("event"),
                    previous_item_id=previous,
                    item=view,
                )
            )

        await session.submit(ConversationEdit(add, adds=True))

    async def _output(
        self,
        item: RealtimeConversationItemFunctionCallOutput,
        item_id: str,
        after: str | None,
        event_id: str | None,
    ) -> None:
        """The output of a call the model made: kept for the next `response.create`, which
        gives the session every output (the history keeps them after their calls)."""
        if item.call_id not in self._renderer.handed_over or item.call_id in self._outputs:
            raise EventError(
                f"Tool call ID {item.call_id[:100]!r} not found in conversation, or not "
                "waiting for its output.",
                code="invalid_value",
                param="item.call_id",
                event_id=event_id,
            )
        if after is not None:
            raise EventError(
                "A function_call_output follows its call: it goes last, without previous_item_id.",
                code="unsupported_value",
                param="previous_item_id",
                event_id=event_id,
            )
        self._outputs[item.call_id] = item.output
        previous = self._renderer.added(item_id, None)
        view = item.model_copy(update={"id": item_id, "object": "realtime.item"})
        view.status = "completed"
        await self._emit(
            ConversationItemAdded(
                type="conversation.item.added",
                event_id=new_id("event"),
                previous_item_id=previous,
                item=view,
            ),
            ConversationItemDone(
                type="conversation.item.done",
                event_id=new_id("event"),
                previous_item_id=previous,
                item=view,
            ),
        )

    def answers(self) -> list[ToolResultCommand]:
        """At `response.create`: the session's answers to the calls handed over to the
        client, each its output or, when the client gave none, an error the model hears."""
        given, self._outputs = self._outputs, {}
        handed = self._renderer.handed_over
        answers = [
            ToolResultCommand(type="tool.result", call_id=call_id, output=output)
            if (output := given.get(call_id)) is not None
            else ToolResultCommand(
                type="tool.result",
                call_id=call_id,
                error="The client gave no output for this call.",
            )
            for call_id in handed
        ]
        handed.clear()
        return answers

    async def truncate(self, session: Session, event: ConversationItemTruncateEvent) -> None:
        item_id, end_ms, event_id = event.item_id, event.audio_end_ms, event.event_id

        async def cut(conversation: Conversation, turn: Turn) -> None:
            item = conversation.find(item_id)
            if item is None and turn.reply_item == item_id and turn.outcome is None:
                # Its response is still on (the Agents SDK truncates, then cancels): done
                # once the item is in the history.
                self.pending.append(event)
                return None
            if item is None:
                return await self._refuse(not_found(item_id, "item_id", event_id))
            if item.spoken is None or item.audio_ms is None:
                return await self._refuse(
                    EventError(
                        "Only model output audio messages can be truncated.",
                        code="unsupported_content_type",
                        param="item_id",
                        event_id=event_id,
                    )
                )
            if event.content_index != 0 or end_ms < 0 or end_ms > item.audio_ms:
                bad_index = event.content_index != 0
                message = (
                    f"The item has one content part, not {event.content_index}."
                    if bad_index
                    else f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms."
                )
                param = "content_index" if bad_index else "audio_end_ms"
                return await self._refuse(
                    EventError(message, code="invalid_value", param=param, event_id=event_id)
                )
            conversation.truncate(item_id, end_ms)
            await self._emit(
                ConversationItemTruncatedEvent(
                    type="conversation.item.truncated",
                    event_id=new_id("event"),
                    item_id=item_id,
                    content_index=0,
                    audio_end_ms=end_ms,
                )
            )

        await session.submit(ConversationEdit(cut))

    async def settle(self, session: Session) -> None:
        """A response ended: the truncates of its item that waited for it."""
        waiting, self.pending = self.pending, []
        for event in waiting:
            await self.truncate(session, event)

    async def delete(self, session: Session, event: ConversationItemDeleteEvent) -> None:
        item_id, event_id = event.item_id, event.event_id

        async def remove(conversation: Conversation, turn: Turn) -> None:
            if not conversation.delete(item_id):
                return await self._refuse(not_found(item_id, "item_id", event_id))
            await self._emit(
                ConversationItemDeletedEvent(
                    type="conversation.item.deleted", event_id=new_id("event"), item_id=item_id
                )
            )

        await session.submit(ConversationEdit(remove))

    async def retrieve(self, session: Session, event: ConversationItemRetrieveEvent) -> None:
        item_id, event_id = event.item_id, event.event_id

        async def show(conversation: Conversation, turn: Turn) -> None:
            item = conversation.find(item_id)
            if item is None and turn.user_item == item_id and turn.transcript:
                # The turn being answered: its user message joins the history at its end.
                message = ChatMessage("user", turn.transcript)
                item = Item(item_id, message, 0, turn.audio_in_ms)
            if item is None:
                return await self._refuse(not_found(item_id, "item_id", event_id))
            await self._emit(
                ConversationItemRetrieved(
                    type="conversation.item.retrieved",
                    event_id=new_id("event"),
                    item=realtime_item(item),
                )
            )

        await session.submit(ConversationEdit(show))

    async def _refuse(self, error: EventError) -> None:
        await self._out(dump(error.event()))

    async def _emit(self, *models: BaseModel) -> None:
        for model in models:
            await self._out(dump(model))
