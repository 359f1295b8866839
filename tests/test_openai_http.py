"""What every OpenAI HTTP adapter does with the provider's stream when its caller stops."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import httpx
import pytest
import respx

from support.openai_wire import BASE_URL, HTTP_ADAPTERS, HangingStream, HttpAdapter


def hanging_answer(adapter: HttpAdapter) -> tuple[HangingStream, httpx.Response]:
    stream = HangingStream([adapter.first_body])
    headers = {"content-type": adapter.content_type}
    return stream, httpx.Response(200, stream=stream, headers=headers)


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS, ids=lambda a: a.stage.value)
async def test_a_cancelled_caller_closes_the_providers_stream(adapter: HttpAdapter) -> None:
    made = adapter.build()
    stream, answer = hanging_answer(adapter)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in adapter.open(made):
            first.set()

    with respx.mock(base_url=BASE_URL) as router:
        router.post(adapter.path).mock(return_value=answer)
        task = asyncio.create_task(consume())
        async with asyncio.timeout(2):
            await first.wait()
        assert not stream.closed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await made.aclose()

    assert stream.closed


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS, ids=lambda a: a.stage.value)
async def test_closing_the_generator_closes_the_providers_stream(adapter: HttpAdapter) -> None:
    made = adapter.build()
    stream, answer = hanging_answer(adapter)
    with respx.mock(base_url=BASE_URL) as router:
        router.post(adapter.path).mock(return_value=answer)
        async with aclosing(adapter.open(made)) as items:
            async with asyncio.timeout(2):
                assert await anext(items) == adapter.first_item
            assert not stream.closed
        assert stream.closed
    await made.aclose()
