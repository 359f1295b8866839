"""LlamaLanguageModel with the real models: the mechanics on SmolLM2-135M-Instruct (fast, loaded
once), answers and the reply cap on the default Qwen2.5-Coder-0.5B-Instruct."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.local.packages import LocalModelMissing
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import DEFAULT_INSTRUCTIONS, LocalSettings
from voice_fsm.speech_pieces import last_sentence_end

from support.local import require_engine

llama_cpp = require_engine("llama_cpp")

from voice_fsm.adapters.local.llm import LlamaLanguageModel  # noqa: E402
from voice_fsm.adapters.local.llm_prompt import (  # noqa: E402
    NUMBER_WORDS,
    SPOKEN_EXAMPLES,
    SpokenLogits,
    fit_context,
    with_examples,
)

# One event loop for the module's async tests: the shared model's lane must not outlive it.
module_loop = pytest.mark.asyncio(loop_scope="module")

FRANCE = [
    ChatMessage("system", DEFAULT_INSTRUCTIONS),
    ChatMessage("user", "What is the capital of France?"),
]
STORY = [ChatMessage("user", "Tell me a very long story about a dragon and a brave knight.")]


def load(**overrides: Any) -> LlamaLanguageModel:
    """SmolLM2 unless `llm_model` says otherwise."""
    try:
        return LlamaLanguageModel(LocalSettings(**{"llm_model": "smollm2-135m", **overrides}))
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm() -> AsyncIterator[LlamaLanguageModel]:
    # A small context keeps the trimming test quick; room for long replies to cancel.
    model = load(llm_context=512, llm_max_tokens=200)
    yield model
    await model.aclose()


@pytest.fixture
def produced(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each chunk left llama_cpp, counted in the worker thread."""
    times: list[float] = []
    original = llama_cpp.Llama.create_chat_completion

    def counting(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in original(self, *args, **kwargs):
            times.append(time.perf_counter())
            yield chunk

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", counting)
    return times


async def collect(llm: LlamaLanguageModel, messages: list[ChatMessage]) -> list[str]:
    return [delta async for delta in llm.reply(messages)]


@module_loop
async def test_answers_the_capital_of_france(llm: LlamaLanguageModel) -> None:
    deltas = await collect(llm, FRANCE)

    assert llm.provider == "local"
    assert llm.model == "SmolLM2-135M-Instruct.Q4_1"
    assert len(deltas) >= 3
    assert all(deltas)
    assert "Paris" in "".join(deltas)


@module_loop
async def test_the_first_sentence_gets_every_thread_and_the_rest_one(
    llm: LlamaLanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Piper speaks the first sentence beside the rest of the reply: two decode threads would
    # then wait on each other; before it, nothing else runs.
    threads: list[tuple[int, str]] = []
    context = llm._llama._ctx
    original = context.set_n_threads

    def recording(n_threads: int, n_batch: int) -> None:
        threads.append((n_threads, "".join(deltas)))
        original(n_threads, n_batch)

    monkeypatch.setattr(context, "set_n_threads", recording)
    deltas: list[str] = []
    async for delta in llm.reply([ChatMessage("user", "Tell me two short facts about cats.")]):
        deltas.append(delta)

    assert threads[0] == (2, "")
    assert threads[1][0] == 1
    first_sentence_end = threads[1][1].rstrip()
    assert first_sentence_end.endswith((".", "!", "?"))
    assert len(threads) == 2  # back to one thread for the next reply's prompt and after
    assert "".join(deltas).startswith(threads[1][1])


@module_loop
async def test_max_tokens_bounds_the_reply() -> None:
    short = load(llm_max_tokens=5)
    try:
        deltas = await collect(short, STORY)
    finally:
        await short.aclose()

    assert 1 <= len(deltas) <= 5
    with pytest.raises(ProviderError) as caught:
        await collect(short, STORY)
    assert caught.value.stage == Stage.LLM


@module_loop
@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_stopping_the_consumer_stops_generation(
    llm: LlamaLanguageModel, produced: list[float], how: str
) -> None:
    got: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async with aclosing(llm.reply(STORY)) as deltas:
            async for delta in deltas:
                got.append(delta)
                if len(got) == 3:
                    three.set()
                    if how == "close":
                        return

    task = asyncio.create_task(consume())
    await three.wait()
    stopped_at = time.perf_counter()
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await task

    # The worker thread has finished when the stream is closed: at most the token being
    # decoded at the time came after the stop.
    assert len(got) == 3
    assert sum(t > stopped_at for t in produced) <= 2
    assert len(produced) < 50
    # The lane is free again.
    assert "Paris" in "".join(await asyncio.wait_for(collect(llm, FRANCE), 30))


@module_loop
async def test_a_history_longer_than_the_context_is_trimmed(llm: LlamaLanguageModel) -> None:
    filler = "Tell me more about the weather in the mountains today, please. " * 4
    history = [ChatMessage("system", DEFAULT_INSTRUCTIONS)]
    for n in range(30):  # about 1,700 tokens in a 512-token context
        history += [ChatMessage("user", f"{n}. {filler}"), ChatMessage("assistant", filler)]

    deltas = await collect(llm, [*history, ChatMessage("user", "What is the capital of France?")])

    assert "".join(deltas).strip()


@module_loop
async def test_the_event_loop_stays_responsive(llm: LlamaLanguageModel) -> None:
    ticks = 0
    ticks_before_first_delta: int | None = None

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    deltas = []
    try:
        # A fresh prompt: its evaluation is the longest single step.
        async for delta in llm.reply([ChatMessage("user", "Name three colours of the rainbow.")]):
            if ticks_before_first_delta is None:
                ticks_before_first_delta = ticks
            deltas.append(delta)
    finally:
        task.cancel()

    assert deltas
    assert ticks_before_first_delta is not None
    assert ticks_before_first_delta >= 1
    assert ticks >= len(deltas)


@module_loop
async def test_engine_errors_become_provider_errors(
    llm: LlamaLanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("llama_decode returned -3")

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", broken)

    with pytest.raises(ProviderError) as caught:
        await collect(llm, FRANCE)

    assert caught.value.code == ErrorCode.PROVIDER_ERROR
    assert caught.value.stage == Stage.LLM
    assert "llama_decode returned -3" in caught.value.message


@module_loop
async def test_qwen_is_the_default_and_does_sums_and_counts_in_digits() -> None:
    qwen = load(llm_model=LocalSettings().llm_model)
    try:
        qwen.warm_up()
        sums = "".join(await collect(qwen, [FRANCE[0], ChatMessage("user", "What is 17 times 3?")]))
        # In words Qwen says "four wheels"; the bias against number words makes it write digits.
        wheels = "".join(
            await collect(
                qwen, [FRANCE[0], ChatMessage("user", "How many wheels does a bicycle have?")]
            )
        )
    finally:
        await qwen.aclose()

    assert qwen.model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert "51" in sums, sums
    assert re.search(r"\b2\b", wheels), wheels
    assert not set(re.findall(r"[a-z]+", wheels.lower())) & set(NUMBER_WORDS), wheels


@module_loop
async def test_a_capped_reply_ends_on_a_sentence_end() -> None:
    # A story goes on and on: past 12 tokens it stops at the next sentence end, at 60 at most.
    capped = load(llm_soft_max_tokens=12, llm_max_tokens=60)
    try:
        reply = "".join(await collect(capped, STORY)).strip()
        # All its sentences but the last: they had ended before the soft cap.
        head = reply[: last_sentence_end(reply[:-1])]
        tokens, head_tokens = capped._count_tokens(reply), capped._count_tokens(head)
    finally:
        await capped.aclose()

    assert reply
    assert last_sentence_end(reply + " ") == len(reply) + 1, reply  # it ends a sentence
    assert tokens <= 60
    assert head_tokens < 12, (reply, head)


def words(text: str) -> int:
    return len(text.split())


def test_fit_context_keeps_the_system_prompt_and_the_newest_messages() -> None:
    messages = [
        ChatMessage("system", "one two"),
        ChatMessage("user", "a b c"),
        ChatMessage("assistant", "d e f"),
        ChatMessage("user", "g h i"),
        ChatMessage("assistant", "j k l"),
        ChatMessage("user", "m n o"),
    ]
    # overhead 1 per message and 1 for the reply: system 3, each other message 4.
    assert fit_context(messages, 100, words, overhead=1) == messages
    assert fit_context(messages, 16, words, overhead=1) == [messages[0], *messages[3:]]
    # The history never starts with an assistant message.
    assert fit_context(messages, 12, words, overhead=1) == [messages[0], messages[5]]
    # The newest message stays even when it alone is too long.
    assert fit_context(messages, 1, words, overhead=1) == [messages[0], messages[5]]


def test_spoken_logits_bias_number_words_and_penalise_the_replys_repeated_words() -> None:
    # Tokens 0-4 are words, 5-9 digits or punctuation; the prompt is tokens [1, 1, 6].
    logits = SpokenLogits({3: -5.0}, 0.5, lambda token: token < 5)
    prompt = np.array([1, 1, 6], dtype=np.intc)

    first = logits(prompt, np.zeros(10, dtype=np.single))
    # Only the bias: the prompt's own words are not the reply's.
    assert first.tolist() == [0, 0, 0, -5, 0, 0, 0, 0, 0, 0]

    reply = np.array([1, 1, 6, 2, 2, 7, 7, 4], dtype=np.intc)  # the prompt, then 2 2 7 7 4
    later = logits(reply, np.zeros(10, dtype=np.single))
    # Words: 0.5 a time they were written; digits (7) and the prompt's tokens (1, 6) go free.
    assert later.tolist() == [0, 0, -1.0, -5, -0.5, 0, 0, 0, 0, 0]


def test_spoken_logits_without_penalty_or_bias_change_nothing() -> None:
    logits = SpokenLogits({}, 0.0, lambda token: True)
    scores = np.arange(4, dtype=np.single)
    logits(np.array([0], dtype=np.intc), scores)
    assert logits(np.array([0, 1, 1], dtype=np.intc), scores).tolist() == [0, 1, 2, 3]


def test_the_default_prompt_gets_spoken_examples_and_ones_own_prompt_does_not() -> None:
    question = ChatMessage("user", "What is 17 times 3?")
    assert with_examples([FRANCE[0], question]) == [FRANCE[0], *SPOKEN_EXAMPLES, question]
    own = ChatMessage("system", "Réponds en français.")
    assert with_examples([own, question]) == [own, question]
    assert with_examples([question]) == [question]
