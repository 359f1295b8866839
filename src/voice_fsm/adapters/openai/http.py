"""What the adapters over OpenAI's HTTP API share (transcriptions, chat, speech)."""

from __future__ import annotations

from typing import Generic, TypeVar

from openai import AsyncOpenAI

from voice_fsm.adapters.openai.warm_connection import WarmConnection
from voice_fsm.errors import Stage
from voice_fsm.settings import StageSettings

S = TypeVar("S", bound=StageSettings)


class OpenAIHttpAdapter(Generic[S]):
    """The stage's settings and client, the secrets to keep out of messages, and a connection
    to the provider opened ahead of time (`WarmConnection`): at start-up (`start`) and as a
    turn begins (`prepare`). Subclasses call `_request_starts` as each request goes out."""

    provider = "openai"

    def __init__(
        self, settings: S, client: AsyncOpenAI, secrets: tuple[str, ...], *, stage: Stage
    ) -> None:
        self.model = settings.model
        self._settings = settings
        self._client = client
        self._secrets = secrets
        self._warm = WarmConnection(client, stage=stage.value)

    async def start(self) -> None:
        self._warm.prepare()

    def prepare(self) -> None:
        self._warm.prepare()

    def _request_starts(self) -> None:
        self._warm.used()

    async def aclose(self) -> None:
        await self._warm.aclose()
        await self._client.close()
