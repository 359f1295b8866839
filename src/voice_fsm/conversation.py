"""The conversation history the language model sees, and what it keeps of a reply: what the
user heard of it, not what the model wrote, and the tool calls that finished with their results
(between the user's message and the reply, as providers expect them)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from voice_fsm.adapters.base import ChatMessage

if TYPE_CHECKING:
    from voice_fsm.turn import Turn


class Conversation:
    """Completed exchanges, oldest first, keeping at most `max_turns` of them."""

    def __init__(self, max_turns: int = 20) -> None:
        self._turns: deque[tuple[str, tuple[ChatMessage, ...], str]] = deque(
            maxlen=max_turns or None
        )
        self._keep = max_turns > 0

    def add_turn(self, user: str, assistant: str, steps: Sequence[ChatMessage] = ()) -> None:
        """`steps`: the turn's tool calls and results, between `user` and `assistant`."""
        if self._keep and (user or assistant or steps):
            self._turns.append((user, tuple(steps), assistant))

    def replace_last_reply(self, assistant: str) -> None:
        """The last reply was cut short after all: keep only what was heard of it."""
        if self._turns:
            user, steps, _ = self._turns[-1]
            self._turns[-1] = (user, steps, assistant)

    def add_interrupted(self, turn: Turn, played_ms: int | None) -> str:
        """Keep what the user heard of `turn`'s reply, interrupted while it was spoken: the
        client's `played_ms` when it says, else all the audio sent (which it may not have
        played). Returns that text."""
        heard = turn.spoken.heard(turn.played_bytes(played_ms))
        self.add_turn(turn.transcript, heard, turn.tool_steps)
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
        self._turns.clear()

    def messages(self) -> list[ChatMessage]:
        out: list[ChatMessage] = []
        for user, steps, assistant in self._turns:
            if user:  # a reply asked for without a new user message has none
                out.append(ChatMessage("user", user))
            out.extend(steps)
            if assistant:
                out.append(ChatMessage("assistant", assistant))
        return out

    def prompt(self, instructions: str, user: str) -> list[ChatMessage]:
        """What the language model is asked: the instructions, the history, `user` (none when
        the reply was asked for without a new user message)."""
        return [
            ChatMessage("system", instructions),
            *self.messages(),
            *([ChatMessage("user", user)] if user else []),
        ]

    def __len__(self) -> int:
        return len(self._turns)
