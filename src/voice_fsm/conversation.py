"""The conversation history the language model sees."""

from __future__ import annotations

from collections import deque

from voice_fsm.adapters.base import ChatMessage


class Conversation:
    """Completed exchanges, oldest first, keeping at most `max_turns` of them."""

    def __init__(self, max_turns: int = 20) -> None:
        self._turns: deque[tuple[str, str]] = deque(maxlen=max_turns or None)
        self._keep = max_turns > 0

    def add_turn(self, user: str, assistant: str) -> None:
        if self._keep and user:
            self._turns.append((user, assistant))

    def replace_last_reply(self, assistant: str) -> None:
        """The last reply was cut short after all: keep only what was heard of it."""
        if self._turns:
            user, _ = self._turns[-1]
            self._turns[-1] = (user, assistant)

    def clear(self) -> None:
        self._turns.clear()

    def messages(self) -> list[ChatMessage]:
        out: list[ChatMessage] = []
        for user, assistant in self._turns:
            out.append(ChatMessage("user", user))
            if assistant:
                out.append(ChatMessage("assistant", assistant))
        return out

    def __len__(self) -> int:
        return len(self._turns)
