"""Language model embedded in the process: llama.cpp running a GGUF file.

By default Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), assembled and verified by `local.models`; the
named option smollm2-135m is SmolLM2-135M-Instruct, several times faster but wrong on most
questions. One `llama_cpp.Llama` is shared by every session; it is not thread-safe, so every
call goes through one `InferenceLane` of concurrency 1, which also keeps generation off the
event loop. Replies are capped on a sentence boundary (`ReplyCap`). What the model is given
for a spoken reply (examples, the history that fits, its logits processor) is `llm_prompt`;
how it is offered tools, gets their results and writes calls is `llm_tools`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Sequence
from functools import partial

import llama_cpp
from llama_cpp.llama_types import ChatCompletionRequestMessage

from voice_fsm.adapters.base import ChatMessage, ReplyEvent, ToolCall, ToolSpec
from voice_fsm.adapters.local.llm_prompt import (
    MESSAGE_OVERHEAD_TOKENS,
    NUMBER_WORDS,
    SPOKEN_EXAMPLES,
    SpokenLogits,
    fit_context,
    with_examples,
)
from voice_fsm.adapters.local.llm_tools import (
    ToolCallParser,
    answers_tool_results,
    fold_tool_results,
    tool_params,
)
from voice_fsm.adapters.local.models import gguf_model
from voice_fsm.adapters.local.runtime import InferenceLane, StopFlag
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import DEFAULT_INSTRUCTIONS, LocalSettings
from voice_fsm.speech_pieces import ReplyCap

TOOLS_PROMPT_TOKENS = 120
"""What Qwen's template writes around the tools' JSON in the system prompt (about 100 tokens)."""

DECODE_THREADS = 1
"""Threads for generating tokens after the first sentence; `LocalSettings.threads` evaluates
the prompt and generates the first sentence.

Measured on a 2-core machine: with SmolLM2-135M one thread decodes as fast as two (about 155
tokens/s), but two threads collapse to 10-50 tokens/s as soon as anything else wants a core
(Piper speaking the previous sentence, another process), because each step waits for both.
Qwen2.5-0.5B is bound by arithmetic, not memory: 48 ms a token with two threads against 87 ms
with one. The first sentence is on the critical path and nothing else runs while it is
generated (the transcript is done, speech waits for it), so it gets every thread; once it is
out, Piper speaks it and the rest of the reply is generated on one thread beside it.
"""


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
        self._decode_threads = min(DECODE_THREADS, settings.threads)
        self._word_tokens: dict[int, bool] = {}
        # The evaluated prefix of each kind of prompt (with tools offered, or with the spoken
        # examples), saved at warm-up: llama.cpp keeps only the last prompt's tokens, and a
        # turn with tools switches kinds twice (a call, then the answer to its results), which
        # cost about 5 s of prompt evaluation each on 2 cores; loading a saved one 0.1-0.6 s.
        self._prefix_states: dict[bool, llama_cpp.LlamaState] = {}
        self._last_kind: bool | None = None
        self._examples_tokens = sum(
            self._count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in SPOKEN_EXAMPLES
        )

    def warm_up(
        self, instructions: str = DEFAULT_INSTRUCTIONS, tools: Sequence[ToolSpec] = ()
    ) -> None:
        """Answer one short question with the system prompt (and tools) the sessions will use
        (blocking).

        llama.cpp keeps the last prompt's evaluated tokens and reuses their longest common
        prefix, so the first user's turn then evaluates only the new messages.
        """
        messages = [ChatMessage("system", instructions), ChatMessage("user", "Hello.")]
        for _ in self._generate(messages, StopFlag(), max_tokens=4, tools=tuple(tools)):
            pass
        self._prefix_states[bool(tools)] = self._llama.save_state()

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply's text deltas, one per token, generated in the lane's thread, and
        the tool calls the model makes when it is offered `tools`.

        The oldest history is dropped if the conversation would not fit in the context.
        Cancelling or closing this stream stops generation at the next token.
        """
        if self._closed:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The local language model is closed.", stage=Stage.LLM
            )
        produce = partial(self._generate, list(messages), tools=tuple(tools))
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
        self,
        messages: Sequence[ChatMessage],
        stop: StopFlag,
        max_tokens: int | None = None,
        tools: tuple[ToolSpec, ...] = (),
    ) -> Iterator[ReplyEvent]:
        """Blocking: yield the reply's text deltas and calls; runs in the lane's worker thread."""
        if self._closed:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The local language model is closed.", stage=Stage.LLM
            )
        settings = self._settings
        max_tokens = max_tokens if max_tokens is not None else settings.llm_max_tokens
        n_ctx = self._llama.n_ctx()
        # Room for the whole reply, but never less than half the context for the prompt.
        budget = max(n_ctx - max_tokens, n_ctx // 2)
        if answers_tool_results(messages):
            tools = ()  # the small model calls again in a loop (llm_tools)
        offered = tool_params(tools)
        history = fold_tool_results(messages)
        if offered:  # with the examples the small model calls no tool (llm_tools)
            budget -= self._count_tokens(json.dumps(offered)) + TOOLS_PROMPT_TOKENS
            fitted = fit_context(history, budget, self._count_tokens)
        else:
            budget -= self._examples_tokens
            fitted = with_examples(fit_context(history, budget, self._count_tokens))
        kind = bool(offered)
        if kind != self._last_kind and kind in self._prefix_states:
            self._llama.load_state(self._prefix_states[kind])
        self._last_kind = kind
        logits = self._logits()
        stream = self._llama.create_chat_completion(
            messages=[_message_param(m) for m in fitted],
            tools=offered or None,
            stream=True,
            max_tokens=max_tokens,
            temperature=settings.llm_temperature,
            logits_processor=llama_cpp.LogitsProcessorList([logits]),
        )
        if isinstance(stream, dict):  # only without stream=True
            raise TypeError("llama_cpp returned a complete response to a streaming request")
        cap = ReplyCap(settings.llm_soft_max_tokens, max_tokens)
        calls = ToolCallParser(tools) if tools else None
        self._set_decode_threads(settings.threads)
        try:
            for chunk in stream:
                stop.check()
                choices = chunk["choices"]
                if not choices:
                    continue
                content = choices[0]["delta"].get("content")
                if isinstance(content, str):  # one token's text ("" for part of a character)
                    if calls is None:
                        if text := cap.feed(content):
                            yield text
                    else:
                        yield from _capped(calls.feed(content), cap)
                        # Number words and repeated words are for speech, not a call's JSON.
                        logits.paused = calls.in_call
                        if calls.settled:
                            return
                    if cap.first_sentence_done:
                        self._set_decode_threads(DECODE_THREADS)
                    if cap.done:
                        return
                finish = choices[0].get("finish_reason")
                if finish is not None:
                    yield from self._finish(cap, calls, cut=finish == "length")
                    return
            yield from self._finish(cap, calls, cut=False)
        finally:
            # Closing llama_cpp's generator ends generation; the model keeps the tokens
            # evaluated so far, which the next prompt may reuse as a prefix.
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            self._set_decode_threads(DECODE_THREADS)

    def _finish(
        self, cap: ReplyCap, calls: ToolCallParser | None, *, cut: bool
    ) -> Iterator[ReplyEvent]:
        if calls is not None:
            yield from _capped(calls.finish(), cap)
        if text := cap.finish(cut=cut):
            yield text

    def _set_decode_threads(self, threads: int) -> None:
        threads = min(threads, self._settings.threads)
        if threads != self._decode_threads:
            # llama_set_n_threads applies from the next decode; llama-cpp-python keeps the
            # context as `_ctx` and has no public setter.
            self._llama._ctx.set_n_threads(threads, self._settings.threads)
            self._decode_threads = threads

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


def _capped(events: list[str | ToolCall], cap: ReplyCap) -> Iterator[ReplyEvent]:
    """The parser's events, the text through the cap: one `feed` per token, as it counts."""
    text = "".join(e for e in events if isinstance(e, str))
    if passed := cap.feed(text):
        yield passed
    yield from (e for e in events if isinstance(e, ToolCall))


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
