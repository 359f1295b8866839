"""Language model through OpenAI's ``POST /chat/completions`` (or a compatible server)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from openai import AsyncOpenAI, omit
from openai.types.chat import ChatCompletionMessageParam

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.openai_errors import translating
from voice_fsm.adapters.openai_http import OpenAIHttpAdapter
from voice_fsm.errors import Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import LlmSettings


class OpenAILanguageModel(OpenAIHttpAdapter[LlmSettings]):
    def __init__(
        self, settings: LlmSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(settings, client, secrets, stage=Stage.LLM)
        # The SDK imports a resource's modules on first use (about 0.2 s): pay it at start-up,
        # not in the first user's turn.
        _ = client.chat.completions

    async def reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """Stream the reply's text deltas; the closing usage chunk (no choices) is skipped."""
        settings = self._settings
        effort = settings.reasoning_effort
        self._request_starts()
        with translating(Stage.LLM, self._secrets):
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=[_message_param(m) for m in messages],
                stream=True,
                stream_options={"include_usage": True},
                max_completion_tokens=settings.max_output_tokens,
                # Left out when unset, for servers and models that reject the field.
                reasoning_effort=effort if effort is not None else omit,
                temperature=settings.temperature if settings.temperature is not None else omit,
            )
            note(Stage.LLM, stream.response.headers.get("x-request-id"))
            try:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    content = chunk.choices[0].delta.content
                    if content:
                        yield content
            finally:
                await stream.close()


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}
