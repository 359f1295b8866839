"""Language model embedded in the process: llama.cpp running a GGUF file.

By default Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), assembled and verified by `local_models`; the
named option smollm2-135m is SmolLM2-135M-Instruct, several times faster but wrong on most
questions. One `llama_cpp.Llama` is shared by every session; it is not thread-safe, so every
call goes through one `InferenceLane` of concurrency 1, which also keeps generation off the
event loop. Replies are capped on a sentence boundary (`ReplyCap`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from functools import partial

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp.llama_types import ChatCompletionRequestMessage

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.local_models import gguf_model
from voice_fsm.adapters.local_runtime import InferenceLane, StopFlag
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import DEFAULT_INSTRUCTIONS, LocalSettings
from voice_fsm.speech_pieces import ReplyCap

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds around each message (ChatML adds 5), and for the reply's header."""

DECODE_THREADS = 1
"""Threads for generating tokens; `LocalSettings.threads` evaluates the prompt.

Measured on a 2-core machine with SmolLM2-135M: one thread decodes as fast as two (about 155
tokens/s), but two threads collapse to 10-50 tokens/s as soon as anything else wants a core
(Piper speaking the previous sentence, another process), because each step waits for both.
"""


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

    def __call__(
        self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        if self._prompt_tokens is None:  # the first call comes right after the prompt
            self._prompt_tokens = len(input_ids)
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


class LlamaLanguageModel:
    provider = "local"

    def __init__(self, settings: LocalSettings, lane: InferenceLane | None = None) -> None:
        path = gguf_model(settings.llm_model, settings.model_cache)
        self.model = path.stem
        self._settings = settings
        # Concurrency 1: the model and its context are not thread-safe.
        self._lane = lane if lane is not None else InferenceLane("llm")
        self._closed = False
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=settings.llm_context,
                n_threads=min(DECODE_THREADS, settings.threads),
                n_threads_batch=settings.threads,
                verbose=False,
            )
        except Exception as err:  # llama_cpp raises ValueError or RuntimeError on a bad file
            raise _provider_error("could not load", err) from err
        self._number_bias = {
            token: settings.llm_number_word_bias
            for word in NUMBER_WORDS
            for form in (f" {word}", f" {word.capitalize()}", word.capitalize())
            if len(token_ids := self._tokens(form)) == 1
            for token in token_ids
        }
        self._word_tokens: dict[int, bool] = {}
        self._examples_tokens = sum(
            self._count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in SPOKEN_EXAMPLES
        )

    def warm_up(self, instructions: str = DEFAULT_INSTRUCTIONS) -> None:
        """Answer one short question with the system prompt the sessions will use (blocking).

        llama.cpp keeps the last prompt's evaluated tokens and reuses their longest common
        prefix, so the first user's turn then evaluates only the new messages.
        """
        messages = [ChatMessage("system", instructions), ChatMessage("user", "Hello.")]
        for _ in self._generate(messages, StopFlag(), max_tokens=4):
            pass

    async def reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """Stream the reply's text deltas, one per token, generated in the lane's thread.

        The oldest history is dropped if the conversation would not fit in the context.
        Cancelling or closing this stream stops generation at the next token.
        """
        if self._closed:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The local language model is closed.", stage=Stage.LLM
            )
        produce = partial(self._generate, list(messages))
        try:
            async with closing_stream(self._lane.stream(produce)) as deltas:
                async for delta in deltas:
                    yield delta
        except ProviderError:
            raise
        except Exception as err:
            raise _provider_error("failed", err) from err

    async def aclose(self) -> None:
        """Free the model once the call running in the lane (if any) has finished."""
        if self._closed:
            return
        self._closed = True
        await self._lane.run(lambda _stop: self._llama.close())

    def _generate(
        self, messages: Sequence[ChatMessage], stop: StopFlag, max_tokens: int | None = None
    ) -> Iterator[str]:
        """Blocking: yield the reply's text deltas; runs in the lane's worker thread."""
        if self._closed:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The local language model is closed.", stage=Stage.LLM
            )
        settings = self._settings
        max_tokens = max_tokens if max_tokens is not None else settings.llm_max_tokens
        n_ctx = self._llama.n_ctx()
        # Room for the whole reply, but never less than half the context for the prompt.
        budget = max(n_ctx - max_tokens, n_ctx // 2)
        fitted = with_examples(
            fit_context(messages, budget - self._examples_tokens, self._count_tokens)
        )
        stream = self._llama.create_chat_completion(
            messages=[_message_param(m) for m in fitted],
            stream=True,
            max_tokens=max_tokens,
            temperature=settings.llm_temperature,
            logits_processor=llama_cpp.LogitsProcessorList([self._logits()]),
        )
        if isinstance(stream, dict):  # only without stream=True
            raise TypeError("llama_cpp returned a complete response to a streaming request")
        cap = ReplyCap(settings.llm_soft_max_tokens, max_tokens)
        try:
            for chunk in stream:
                stop.check()
                choices = chunk["choices"]
                if not choices:
                    continue
                content = choices[0]["delta"].get("content")
                if isinstance(content, str):  # one token's text ("" for part of a character)
                    if text := cap.feed(content):
                        yield text
                    if cap.done:
                        return
                finish = choices[0].get("finish_reason")
                if finish is not None:
                    if text := cap.finish(cut=finish == "length"):
                        yield text
                    return
            if text := cap.finish():
                yield text
        finally:
            # Closing llama_cpp's generator ends generation; the model keeps the tokens
            # evaluated so far, which the next prompt may reuse as a prefix.
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def _logits(self) -> SpokenLogits:
        bias = self._number_bias if self._settings.llm_number_word_bias else {}
        return SpokenLogits(bias, self._settings.llm_frequency_penalty, self._is_word)

    def _is_word(self, token: int) -> bool:
        """Whether a token's text has a letter (not a digit, punctuation or space alone)."""
        known = self._word_tokens.get(token)
        if known is None:
            text = self._llama.detokenize([token]).decode("utf-8", errors="ignore")
            known = self._word_tokens[token] = any(ch.isalpha() for ch in text)
        return known

    def _tokens(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _count_tokens(self, text: str) -> int:
        return len(self._tokens(text))


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


def _message_param(message: ChatMessage) -> ChatCompletionRequestMessage:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}


def _provider_error(what: str, err: Exception) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"The local language model {what}: {type(err).__name__}: {err}",
        stage=Stage.LLM,
    )
