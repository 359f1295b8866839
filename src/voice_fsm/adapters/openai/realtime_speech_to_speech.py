"""Speech-to-speech through OpenAI's Realtime API: the model hears the user and answers aloud.

One Realtime session (``client.realtime.connect(model=...)``) per conversation, configured once
(instructions, voice, tools, PCM16 24 kHz both ways, the user's speech transcribed alongside);
what runs on it is a `realtime_conversation.RealtimeConversation`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent, SessionUpdatedEvent
from openai.types.realtime.conversation_item_param import ConversationItemParam
from openai.types.realtime.session_update_event_param import Session

from voice_fsm.adapters.base import ChatMessage, ToolSpec
from voice_fsm.adapters.openai.client import close_quietly
from voice_fsm.adapters.openai.errors import translating
from voice_fsm.adapters.openai.realtime_conversation import RealtimeConversation, error_failure
from voice_fsm.adapters.openai.realtime_conversation_events import (
    conversation_session,
    history_items,
)
from voice_fsm.adapters.openai.realtime_responses import speech_connection_options
from voice_fsm.errors import Stage

DEFAULT_MODEL = "gpt-realtime-2.1-mini"
TRANSCRIPTION_MODEL = "gpt-live-transcribe"


class OpenAISpeechToSpeech:
    """Opens `RealtimeConversation`s on one client: the speech-to-speech pipeline's adapter."""

    provider = "openai-realtime"

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str = DEFAULT_MODEL,
        voice: str = "marin",
        timeout: float = 10.0,
        transcription_model: str | None = TRANSCRIPTION_MODEL,
        stage: Stage = Stage.LLM,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self._client = client
        self._voice = voice
        self._timeout = timeout
        self._transcription_model = transcription_model
        self._stage = stage
        self._secrets = secrets
        _ = client.realtime  # the SDK imports a resource's modules on first use: pay it now

    async def connect(
        self,
        *,
        instructions: str,
        tools: Sequence[ToolSpec] = (),
        voice: str | None = None,
        turn_detection: dict[str, Any] | None = None,
        history: Sequence[ChatMessage] = (),
    ) -> RealtimeConversation:
        """Open and configure a session; `history` (earlier text exchanges) is added to it.

        `turn_detection` None: the caller commits each turn (`respond`); with ``server_vad``
        the server commits, but responses are still asked for by `respond`.
        """
        session = conversation_session(
            instructions=instructions,
            voice=voice or self._voice,
            tools=tools,
            turn_detection=turn_detection,
            transcription_model=self._transcription_model,
        )
        with translating(self._stage, self._secrets):
            async with asyncio.timeout(self._timeout):
                connection = await self._client.realtime.connect(
                    model=self.model, websocket_connection_options=speech_connection_options()
                ).enter()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._configure(connection, session, history)
            except BaseException:
                await close_quietly(connection)
                raise
        return RealtimeConversation(
            connection,
            timeout=self._timeout,
            transcribed=self._transcription_model is not None,
            manual_commit=turn_detection is None,
            stage=self._stage,
            secrets=self._secrets,
        )

    async def _configure(
        self,
        connection: AsyncRealtimeConnection,
        session: dict[str, Any],
        history: Sequence[ChatMessage],
    ) -> None:
        await connection.session.update(session=cast(Session, session))
        for item in history_items(history):
            await connection.conversation.item.create(item=cast(ConversationItemParam, item))
        while not isinstance(event := await connection.recv(), SessionUpdatedEvent):
            if isinstance(event, RealtimeErrorEvent):
                raise error_failure(event.error, self._stage, self._secrets)

    async def aclose(self) -> None:
        await self._client.close()
