"""A speech-to-speech conversation on one open, configured OpenAI Realtime session (opened by
`realtime_speech_to_speech.OpenAISpeechToSpeech`). The session keeps the conversation
server-side; a turn is::

    append(pcm)*            the user's audio, as it is recorded
    respond()               commits it and asks for a response; yields, in arrival order,
                            UserTranscript, ReplyTranscriptDelta*, ReplyAudio*, ToolCall*,
                            then ReplyDone
    submit_tool_result()*   after ToolCalls: each call's output, then respond() again
    truncate()              after a barge-in: the reply's item cut to what the user heard

Closing `respond`'s generator (or cancelling its task) before ``ReplyDone`` sends
``response.cancel``; events of an abandoned response that arrive later are skipped by id. The
SDK raises for none of the server's ``error`` events: an error about this turn's requests, a
``response.done`` that failed, the connection lost and a silent server (``timeout`` between two
events) are `ProviderError`s (stage `stage`, retryable for outages and timeouts). After a lost
connection every call raises; open a new conversation.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, cast

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent as TranscriptionCompleted,
)
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionFailedEvent as TranscriptionFailed,
)
from openai.types.realtime import (
    InputAudioBufferCommittedEvent,
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeServerEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
)
from openai.types.realtime.conversation_item_param import ConversationItemParam

from voice_fsm.adapters.base import ToolCall
from voice_fsm.adapters.openai.client import close_quietly
from voice_fsm.adapters.openai.errors import realtime_error, translating
from voice_fsm.adapters.openai.realtime_conversation_events import (
    ConversationEvent,
    ReplyAudio,
    ReplyDone,
    ReplyTranscriptDelta,
    UserTranscript,
)
from voice_fsm.adapters.openai.realtime_responses import OutputTranscript
from voice_fsm.adapters.openai.realtime_wire import recv_event
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.logging_setup import get_logger
from voice_fsm.provider_requests import note

APPEND_BYTES = 96_000  # most audio per input_audio_buffer.append: 2 s of PCM16
BYTES_PER_MS = 48  # PCM16 mono at 24 kHz
KEPT_ITEMS = 16  # assistant items whose audio length is kept, for truncate's clamp
KEPT_IDS = 64  # ids of requests whose errors are only logged


class RealtimeConversation:
    """One speech-to-speech conversation on an open, configured Realtime session."""

    def __init__(
        self,
        connection: AsyncRealtimeConnection,
        *,
        timeout: float,
        transcribed: bool = True,
        manual_commit: bool = True,
        stage: Stage = Stage.LLM,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._transcribed = transcribed
        self._manual = manual_commit
        self._stage = stage
        self._secrets = secrets
        self._uncommitted = 0  # bytes appended since the last commit
        self._creates: deque[str] = deque()  # our response.create ids awaiting response.created
        self._next_turn: set[str] = set()  # ids whose errors the next respond() raises
        self._quiet: deque[str] = deque(maxlen=KEPT_IDS)  # ids whose errors are only logged
        self._audio: dict[str, int] = {}  # assistant item id -> bytes of audio received
        self._active: str | None = None  # the response respond() is reading
        self._lost: ProviderError | None = None
        self._log = get_logger(stage=stage.value)

    def audio_ms(self, item_id: str) -> int:
        """How much of `item_id`'s audio has arrived, in milliseconds (0 if none)."""
        return self._audio.get(item_id, 0) // BYTES_PER_MS

    async def append(self, pcm: bytes) -> None:
        """More of the user's audio (PCM16 24 kHz mono); waits only for the socket."""
        for start in range(0, len(pcm), APPEND_BYTES):
            audio = base64.b64encode(pcm[start : start + APPEND_BYTES]).decode("ascii")
            await self._send(self._connection.input_audio_buffer.append, audio=audio)
        self._uncommitted += len(pcm)

    async def submit_tool_result(self, call_id: str, output: str) -> None:
        """A tool call's output, for the next `respond` to speak about."""
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        event_id = await self._send(
            self._connection.conversation.item.create, item=cast(ConversationItemParam, item)
        )
        self._next_turn.add(event_id)

    async def truncate(self, item_id: str, audio_end_ms: int) -> int:
        """Cut the reply's item `item_id` to the audio the user heard; returns the ms kept (no
        more than arrived: OpenAI refuses a cut past the end). Errors are only logged."""
        heard = max(0, audio_end_ms)
        if item_id in self._audio:
            heard = min(heard, self.audio_ms(item_id))
        self._quiet.append(
            await self._send(
                self._connection.conversation.item.truncate,
                item_id=item_id,
                content_index=0,
                audio_end_ms=heard,
            )
        )
        return heard

    async def cancel(self) -> None:
        """Stop the response being read: `respond` ends with ``ReplyDone`` ``cancelled``."""
        if self._active is not None:
            await self._cancel(self._active)

    async def aclose(self) -> None:
        await close_quietly(self._connection)

    async def respond(self) -> AsyncGenerator[ConversationEvent, None]:
        """Commit the audio appended since the last turn (if any) and ask for a response."""
        mine: set[str] = self._next_turn
        self._next_turn = set()
        committing = self._uncommitted > 0 and self._manual
        if committing:
            mine.add(await self._send(self._connection.input_audio_buffer.commit))
            self._uncommitted = 0
        create = await self._send(self._connection.response.create)
        mine.add(create)
        self._creates.append(create)
        user_item: str | None = None
        heard_user = not (self._transcribed and (committing or not self._manual))
        response_id: str | None = None
        transcript = OutputTranscript()
        done: ReplyDone | None = None
        try:
            while done is None or not heard_user:
                try:
                    event = await self._recv()
                except ProviderError as err:
                    if done is None or err.code != ErrorCode.PROVIDER_TIMEOUT:
                        raise
                    yield UserTranscript(user_item or "", None)  # the reply is what counts
                    break
                if isinstance(event, InputAudioBufferCommittedEvent):
                    if response_id is None and not heard_user:
                        user_item = event.item_id
                elif isinstance(event, TranscriptionCompleted | TranscriptionFailed):
                    if event.item_id == user_item and not heard_user:
                        heard_user = True
                        text = (
                            event.transcript if isinstance(event, TranscriptionCompleted) else None
                        )
                        yield UserTranscript(event.item_id, text)
                elif isinstance(event, RealtimeErrorEvent):
                    self._on_error(event, mine)
                elif isinstance(event, ResponseCreatedEvent):
                    if self._creates and self._creates.popleft() == create:
                        response_id = self._active = event.response.id
                        note(self._stage, response_id)
                elif done is not None or response_id is None:
                    continue  # another response's, or this one's after its end
                elif isinstance(event, ResponseDoneEvent):
                    if event.response.id == response_id:
                        done = self._finish(event, transcript.text)
                        heard_user = heard_user or user_item is None
                elif getattr(event, "response_id", None) != response_id:
                    continue
                elif isinstance(event, ResponseAudioDeltaEvent):
                    pcm = base64.b64decode(event.delta)
                    self._keep_audio(event.item_id, len(pcm))
                    yield ReplyAudio(event.item_id, pcm)
                elif isinstance(event, ResponseAudioTranscriptDeltaEvent):
                    transcript.add(event.delta)
                    yield ReplyTranscriptDelta(event.item_id, event.delta)
                elif isinstance(event, ResponseAudioTranscriptDoneEvent):
                    transcript.done(event.transcript)
                elif isinstance(event, ResponseFunctionCallArgumentsDoneEvent):
                    yield ToolCall(event.call_id, event.name, event.arguments)
        finally:
            if done is None and self._lost is None:
                await self._cancel(response_id)
            self._active = None
        assert done is not None
        yield done

    # ------------------------------------------------------------ reading and sending

    async def _recv(self) -> RealtimeServerEvent:
        self._check()
        try:
            with translating(self._stage, self._secrets):
                async with asyncio.timeout(self._timeout):
                    return await recv_event(self._connection)
        except ProviderError as err:
            if err.code != ErrorCode.PROVIDER_TIMEOUT:
                self._lost = err
            raise

    async def _send(self, method: Any, **fields: Any) -> str:
        """Call one of the SDK's senders with a new event id, which it returns."""
        self._check()
        event_id = f"s2s_{uuid.uuid4().hex[:20]}"
        try:
            with translating(self._stage, self._secrets):
                async with asyncio.timeout(self._timeout):
                    await method(**fields, event_id=event_id)
        except ProviderError as err:
            self._lost = err
            raise
        return event_id

    async def _cancel(self, response_id: str | None) -> None:
        """``response.cancel``, quietly: the response may have ended meanwhile."""
        try:
            if response_id is None:
                self._quiet.append(await self._send(self._connection.response.cancel))
            else:
                cancel = self._connection.response.cancel
                self._quiet.append(await self._send(cancel, response_id=response_id))
        except ProviderError:
            pass  # the connection is gone: nothing left to cancel

    def _check(self) -> None:
        if self._lost is not None:
            raise ProviderError(self._lost.code, self._lost.message, stage=self._stage)

    def _keep_audio(self, item_id: str, size: int) -> None:
        self._audio[item_id] = self._audio.pop(item_id, 0) + size  # the latest last
        while len(self._audio) > KEPT_ITEMS:
            del self._audio[next(iter(self._audio))]

    def _on_error(self, event: RealtimeErrorEvent, mine: set[str]) -> None:
        """Raise for an error about this turn or the session; log one about another request."""
        error = event.error
        if error.event_id is not None and error.event_id in self._creates:
            self._creates.remove(error.event_id)  # that response will never be created
        if error.event_id is not None and error.event_id not in mine:
            self._log.info("s2s.request_refused", code=error.code, message=error.message)
            return
        raise error_failure(error, self._stage, self._secrets)

    def _finish(self, event: ResponseDoneEvent, transcript: str | None) -> ReplyDone:
        response = event.response
        details = response.status_details
        if response.status == "failed":
            error = details.error if details is not None else None
            raise realtime_error(
                self._stage,
                kind=error.type if error else "server_error",
                code=error.code if error else None,
                message="the response failed",
                secrets=self._secrets,
            )
        reason = details.reason if details is not None else None
        return ReplyDone(str(response.id), str(response.status), reason, transcript)


def error_failure(error: RealtimeError, stage: Stage, secrets: tuple[str, ...]) -> ProviderError:
    """The `ProviderError` for an ``error`` event's error object."""
    return realtime_error(
        stage, kind=error.type, code=error.code, message=error.message, secrets=secrets
    )
