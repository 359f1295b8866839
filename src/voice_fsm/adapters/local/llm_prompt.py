"""What the embedded language model is given for a spoken reply: example exchanges after the
default system prompt, the history that fits its context, and a logits processor that prefers
digits to number words and holds back repeated words."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.settings import DEFAULT_INSTRUCTIONS

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds around each message (ChatML adds 5), and for the reply's header."""


SPOKEN_EXAMPLES = (
    ChatMessage("user", "Who invented the telephone?"),
    ChatMessage("assistant", "Alexander Graham Bell invented the telephone."),
    ChatMessage("user", "How do I keep cut flowers fresh?"),
    ChatMessage("assistant", "Trim the stems a little and change the water every couple of days."),
    ChatMessage("user", "What year did the Titanic sink?"),
    ChatMessage("assistant", "The Titanic sank in 1912."),
    ChatMessage("user", "What is the main ingredient of guacamole?"),
    ChatMessage("assistant", "The main ingredient of guacamole is avocado."),
    ChatMessage("user", "What is a good way to remember names?"),
    ChatMessage(
        "assistant",
        "Say the person's name back to them when you meet, and use it once more before you "
        "say goodbye.",
    ),
)
"""Exchanges shown to the model after the default system prompt: a 0.5B model follows examples
better than rules. With them, Qwen2.5-Coder answers how-to questions ("How do I make pancakes?",
"What should I pack for a beach trip?") in a sentence instead of a markdown list. They are on
topics that bench/questions.json does not ask about, chosen on 50 other questions (a
question about the set being judged would teach its answers). They are part of the prompt
prefix that `warm_up` caches, so they cost no time per turn."""

NUMBER_WORDS = (
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
)
"""Spelled-out numbers that `SpokenLogits` makes unlikely, so the model writes digits.
Qwen2.5-Coder knows counts far better in digits. After "A bicycle has" its next word is " four"
(0.30) before " two" (0.27), but after "A bicycle has " the digit "2" has 0.99; "An insect has"
goes on with " four", "An insect has " with "6" (0.64). "one" is left alone: it is also a
pronoun. Speech reads digits as words anyway."""


class SpokenLogits:
    """A llama.cpp logits processor for spoken replies: a bias against NUMBER_WORDS, and a
    frequency penalty on the reply's own repeated words (loops such as "sunscreen,
    sunscreen, ..."). Unlike llama.cpp's `frequency_penalty` it leaves digits and punctuation
    alone: Qwen writes one token per digit, so that penalty pushed "100 degrees" towards
    "10,000". One instance per reply (it remembers where the prompt ends)."""

    def __init__(self, bias: dict[int, float], penalty: float, is_word: Callable[[int], bool]):
        self._bias_ids = np.array(list(bias), dtype=np.intc)
        self._bias = np.array(list(bias.values()), dtype=np.single)
        self._penalty = penalty
        self._is_word = is_word
        self._prompt_tokens: int | None = None
        self.paused = False
        """Set while the model writes a tool call: its JSON may repeat keys and names."""

    def __call__(
        self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        if self._prompt_tokens is None:  # the first call comes right after the prompt
            self._prompt_tokens = len(input_ids)
        if self.paused:
            return scores
        scores[self._bias_ids] += self._bias
        if self._penalty:
            tokens, counts = np.unique(input_ids[self._prompt_tokens :], return_counts=True)
            words = np.array([self._is_word(int(t)) for t in tokens], dtype=bool)
            if words.any():
                scores[tokens[words]] -= self._penalty * counts[words]
        return scores


def with_examples(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """`messages` with SPOKEN_EXAMPLES after the system prompt, when it is the default one (a
    prompt of one's own, in another language say, is left alone)."""
    out = list(messages)
    if out and out[0].role == "system" and out[0].content == DEFAULT_INSTRUCTIONS:
        out[1:1] = SPOKEN_EXAMPLES
    return out


def fit_context(
    messages: Sequence[ChatMessage],
    budget: int,
    count_tokens: Callable[[str], int],
    overhead: int = MESSAGE_OVERHEAD_TOKENS,
) -> list[ChatMessage]:
    """The leading system messages and as many of the newest others as fit in `budget` tokens.

    The newest message is always kept (if it alone is too long, llama.cpp's error says so), and
    the kept history never starts with an assistant message.
    """
    split = 0
    while split < len(messages) and messages[split].role == "system":
        split += 1
    head, rest = list(messages[:split]), messages[split:]
    used = overhead + sum(count_tokens(m.content) + overhead for m in head)
    kept: list[ChatMessage] = []
    for message in reversed(rest):
        cost = count_tokens(message.content) + overhead
        if kept and used + cost > budget:
            break
        used += cost
        kept.append(message)
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
    return head + kept
