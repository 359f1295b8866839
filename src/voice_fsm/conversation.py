"""The conversation history the language model sees, and what it keeps of a reply: what the
user heard of it, not what the model wrote, and the tool calls that finished with their results
(between the user's message and the reply, as providers expect them).

The history is a list of items, each a message with an id, so a front end can name one: the
Realtime API adds a message, cuts an assistant's item to the audio the user heard (the rule a
barge-in follows), deletes or retrieves one (`ConversationEdit`, run by the driver in order with
the other commands). Items are kept by exchange (a turn, or a message added alone): at most
`max_turns` exchanges.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.audio import bytes_for_ms, duration_ms

if TYPE_CHECKING:
    from voice_fsm.speech_pieces import SpokenReply
    from voice_fsm.turn import Turn


@dataclass
class Item:
    id: str
    message: ChatMessage
    exchange: int
    audio_ms: int | None = None
    """How long the audio it was heard or spoken as is (None: it was text)."""
    spoken: SpokenReply | None = None
    """A spoken reply's pieces and their audio: what cuts it to what was heard."""


@dataclass(frozen=True)
class ConversationEdit:
    """A change to (or a look at) the history, asked by a front end and run by the driver in
    its turn with the other commands; `run` gets the history and the current turn. An edit
    that `adds` an item settles a transcribed turn still waiting to be answered first, so its
    user message comes before the new item."""

    run: Callable[[Conversation, Turn], Awaitable[None]]
    adds: bool = False


def new_item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


class Conversation:
    """Items of completed exchanges, oldest first, of at most `max_turns` exchanges."""

    def __init__(self, max_turns: int = 20) -> None:
        self._items: list[Item] = []
        self._max = max_turns
        self._exchange = 0

    def add_turn(self, turn: Turn, assistant: str) -> None:
        """`turn`'s user message, its tool calls and results, and `assistant` (what was kept
        of its reply), under the ids the turn's items were given."""
        user, steps = turn.transcript, turn.tool_steps
        if self._max <= 0 or not (user or assistant or steps or turn.reply_item):
            return
        exchange = self._next_exchange()
        if user:
            heard_ms = turn.audio_in_ms or None
            message = ChatMessage("user", user)
            self._items.append(Item(turn.user_item or new_item_id(), message, exchange, heard_ms))
        self._items += [Item(new_item_id(), step, exchange) for step in steps]
        if assistant or turn.reply_item:
            spoken = turn.spoken if turn.audio_sent else None
            item = Item(
                turn.reply_item or new_item_id(),
                ChatMessage("assistant", assistant),
                exchange,
                duration_ms(turn.audio_sent) if spoken else None,
                spoken,
            )
            self._items.append(item)
        self._trim()

    def add_message(self, item_id: str, message: ChatMessage, after: str | None = None) -> Item:
        """A message added alone (an exchange of its own): last, or right after the item
        `after` ("root": first). Raises KeyError for an `after` not in the history."""
        item = Item(item_id, message, self._next_exchange())
        if after is None:
            self._items.append(item)
        elif after == "root":
            self._items.insert(0, item)
        else:
            self._items.insert(self._index(after) + 1, item)
        self._trim()
        return item

    def find(self, item_id: str) -> Item | None:
        return next((item for item in self._items if item.id == item_id), None)

    def delete(self, item_id: str) -> bool:
        before = len(self._items)
        self._items = [item for item in self._items if item.id != item_id]
        return len(self._items) < before

    def truncate(self, item_id: str, audio_end_ms: int) -> str:
        """Keep of a spoken reply what its first `audio_end_ms` of audio said; that text."""
        item = self._items[self._index(item_id)]
        if item.spoken is None:
            raise ValueError(f"{item_id} is not a spoken reply")
        item.message = ChatMessage("assistant", item.spoken.heard(bytes_for_ms(audio_end_ms)))
        return item.message.content

    def replace_last_reply(self, assistant: str) -> None:
        """The last reply was cut short after all: keep only what was heard of it."""
        last = self._items[-1] if self._items else None
        if last is not None and last.message.role == "assistant" and not last.message.tool_calls:
            last.message = ChatMessage("assistant", assistant)

    def add_interrupted(self, turn: Turn, played_ms: int | None) -> str:
        """Keep what the user heard of `turn`'s reply, interrupted while it was spoken: the
        client's `played_ms` when it says, else all the audio sent (which it may not have
        played). Returns that text."""
        heard = turn.spoken.heard(turn.played_bytes(played_ms))
        self.add_turn(turn, heard)
        return heard

    def trim_to_heard(self, turn: Turn, played_ms: int | None) -> str | None:
        """`turn`'s reply was all sent, but the client may still have been playing it when
        the user started talking: keep what was heard of it. Only on the client's word: a
        client that does not play audio (a script) may start its next turn at once, and its
        history must not lose the reply. Returns the text kept when it was cut."""
        if played_ms is None or turn.outcome != "ok" or not turn.audio_sent:
            return None
        played = turn.played_bytes(played_ms)
        if played >= turn.audio_sent:
            return None
        heard = turn.spoken.heard(played)
        self.replace_last_reply(heard)
        return heard

    def clear(self) -> None:
        self._items.clear()

    def messages(self) -> list[ChatMessage]:
        """The history's messages; an empty one (a reply of which nothing was heard, a reply
        asked for without a new user message) is left out."""
        return [
            item.message
            for item in self._items
            if item.message.content or item.message.role == "tool" or item.message.tool_calls
        ]

    def prompt(self, instructions: str, user: str) -> list[ChatMessage]:
        """What the language model is asked: the instructions, the history, `user` (none when
        the reply was asked for without a new user message)."""
        return [
            ChatMessage("system", instructions),
            *self.messages(),
            *([ChatMessage("user", user)] if user else []),
        ]

    def __len__(self) -> int:
        """The exchanges kept."""
        return len({item.exchange for item in self._items})

    def _next_exchange(self) -> int:
        self._exchange += 1
        return self._exchange

    def _index(self, item_id: str) -> int:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        raise KeyError(item_id)

    def _trim(self) -> None:
        if self._max <= 0:
            self._items.clear()
            return
        kept = sorted({item.exchange for item in self._items})[-self._max :]
        if len(kept) < len({item.exchange for item in self._items}):
            oldest = kept[0]
            self._items = [item for item in self._items if item.exchange >= oldest]
