"""A fake OpenAI Realtime *conversation* server: a speech-to-speech model for tests and benches.

Where `fake_realtime` reads text aloud (out-of-band responses) or transcribes, this one holds a
conversation as OpenAI's GA Realtime API does: the user's audio is appended and committed as a
user item (``input_audio_buffer.committed``, ``conversation.item.added`` / ``.done``, and with
``audio.input.transcription`` set, its transcript: `FakeConversationConfig.transcript`), and a
``response.create`` answers it with an assistant item that speaks `FakeConversationConfig.reply`
(``response.output_audio.delta`` paced by the `ConversationLatency`, with its output transcript's
words alongside), or, when the session offers the configured `FakeToolCall`'s tool, calls it
(``response.function_call_arguments.delta`` / ``.done``); a ``function_call_output`` item
(``conversation.item.create``) and a new ``response.create`` then speak `tool_reply`.
``response.cancel`` ends the response as ``cancelled`` (its item ``incomplete``, holding the
audio sent so far) and ``conversation.item.truncate`` cuts an assistant item's audio to what the
user heard; every truncation is recorded in `FakeConversationConfig.truncations`. With
``server_vad`` the server commits by itself, answers (``create_response``) and cancels a response
when the user speaks over it (``interrupt_response``), as OpenAI does.

Inconvenient on demand: `drop_after_chunks` closes the connection (1011) in the middle of a
response, `server_error_after_chunks` ends it with an ``error`` event of type ``server_error``
and ``response.done`` ``failed``; the inherited `errors` and `hang_up_on` answer any client
event with an error or a hang-up. Everything else (handshake, ``session.update`` checks, the
VAD, recording) is `fake_realtime`'s, whose connection this one extends.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from voice_fsm.testing.fake_openai import SAMPLE_RATE, speech_pcm, words
from voice_fsm.testing.fake_realtime import (
    FakeRealtimeConfig,
    _Connection,
    _error,
    _id,
    _response,
    realtime_routes,
)
from voice_fsm.testing.threaded_server import serving_in_thread

REPLY = "The capital of France is Paris."
SERVER_ERROR = (
    "The server had an error while processing your request. Sorry about that! You can retry "
    "your request, or contact us through our help center at help.openai.com if the error persists."
)
ARGUMENT_PIECE_CHARS = 8  # one response.function_call_arguments.delta per this many characters


@dataclass(frozen=True, slots=True)
class ConversationLatency:
    """How fast the fake model answers. OpenAI's realtime models begin speaking some 0.3-0.8 s
    after ``response.create`` and send audio faster than it plays."""

    first_audio_s: float = 0.5
    """``response.create`` to the first audio delta (or a tool call's first argument delta)."""
    realtime_factor: float = 4.0
    """Audio arrives this many times faster than it plays; 0 sends it all at once."""
    chunk_bytes: int = 4800  # 100 ms of PCM16 at 24 kHz

    @property
    def chunk_delay_s(self) -> float:
        if self.realtime_factor <= 0:
            return 0.0
        return self.chunk_bytes / 2 / SAMPLE_RATE / self.realtime_factor


INSTANT = ConversationLatency(first_audio_s=0.0, realtime_factor=0.0)


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    """The function the fake model calls, when the session offers a tool of that name."""

    name: str
    arguments: str  # JSON text, sent as it is


@dataclass(frozen=True, slots=True)
class Truncation:
    """A ``conversation.item.truncate`` the fake applied."""

    connection: int
    item_id: str
    content_index: int
    audio_end_ms: int
    audio_ms: int  # how much audio the item held before
    transcript: str  # what the item's transcript said before (the server deletes it)


@dataclass
class FakeConversationConfig(FakeRealtimeConfig):
    """What the fake model says and how fast. The inherited `transcript` is what the user's
    items say; `session_delay` and `transcription_delay` keep their meaning, the ``tts_*``
    delays are `latency`'s here."""

    reply: str = REPLY
    tool_call: FakeToolCall | None = None
    tool_reply: str = "The tool said: {output}"
    """What a response after a ``function_call_output`` says; ``{output}`` is the output."""
    latency: ConversationLatency = INSTANT
    drop_after_chunks: int | None = None
    """Close the connection (1011) once a response has sent this many audio deltas."""
    server_error_after_chunks: int | None = None
    """End a response with a ``server_error`` after this many audio deltas."""
    truncations: list[Truncation] = field(default_factory=list)

    def reset(self, **changes: Any) -> None:
        fresh = type(self)(**changes)
        for item in fields(self):
            setattr(self, item.name, getattr(fresh, item.name))


@dataclass
class _Reply:
    """The assistant item a response is producing."""

    item: dict[str, Any]
    audio_ms: int = 0


class _ConversationConnection(_Connection):
    config: FakeConversationConfig

    def __init__(
        self,
        websocket: WebSocket,
        config: FakeConversationConfig,
        index: int,
        session: dict[str, Any],
    ) -> None:
        super().__init__(websocket, config, index, session)
        self.truncations = config.truncations  # still this connection's record after a reset
        self.conversation_id = _id("conv")
        self.items: list[dict[str, Any]] = []
        self.audio_ms: dict[str, int] = {}  # assistant item id -> audio it holds
        self.replying: _Reply | None = None

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        own = {
            "conversation.item.truncate": self.truncate,
            "conversation.item.create": self.create_item,
        }
        handler = own.get(kind) if isinstance(kind, str) else None
        if handler is None or self.config.hang_up_on.get(str(kind)) or kind in self.config.errors:
            await super().handle(event)
        else:
            await handler(event)

    async def update(self, event: dict[str, Any]) -> None:
        tools = (event.get("session") or {}).get("tools")
        if tools is not None and (problem := _tools_problem(tools)) is not None:
            await self.error(_error("invalid_value", problem, "session.tools"), event)
            return
        await super().update(event)

    # ------------------------------------------------------------ the user's items

    @property
    def transcribing(self) -> bool:
        return bool(self.session.get("audio", {}).get("input", {}).get("transcription"))

    async def live_deltas(self) -> None:
        if self.transcribing:
            await super().live_deltas()

    async def commit_item(self, *, heard: bool) -> None:
        item_id = self.item or self.new_item()
        previous = self.items[-1]["id"] if self.items else None
        self.buffer_samples = 0
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        if self.transcribing:
            transcript = self.item_transcript if heard else ""
            self.spawn(self.transcribe(item_id, transcript, self.item_words, self.item_samples))
        self.item, self.item_samples, self.item_words = None, 0, 0
        content = [{"type": "input_audio", "transcript": None}]
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed"}
        await self.add_item({**item, "role": "user", "content": content})
        vad = self.turn_detection
        if vad is not None and heard and vad.get("create_response", True):
            await self.create_response({"type": "response.create"})

    async def detect(self, vad: dict[str, Any], rms: float, at_ms: int) -> bool:
        was_speaking = self.speaking
        speech = await super().detect(vad, rms, at_ms)
        interrupts = vad.get("interrupt_response", True) and self.response is not None
        if self.speaking and not was_speaking and interrupts:
            await self.end_response("turn_detected")
        return speech

    async def add_item(self, item: dict[str, Any]) -> None:
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        await self.send("conversation.item.added", previous_item_id=previous, item=item)
        await self.send("conversation.item.done", previous_item_id=previous, item=item)

    async def create_item(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        problem = _item_problem(item, self.items)
        if problem is not None or not isinstance(item, dict):
            param, message = problem or ("item", "Missing required parameter: 'item'.")
            await self.error(_error("invalid_value", message, param), event)
            return
        await self.add_item(
            {
                **item,
                "id": item.get("id") or _id("item"),
                "object": "realtime.item",
                "status": "completed",
            }
        )

    async def truncate(self, event: dict[str, Any]) -> None:
        item_id, index, end_ms = (
            event.get(k) for k in ("item_id", "content_index", "audio_end_ms")
        )
        item = next((i for i in self.items if i["id"] == item_id), None)
        if item is None:
            message = f"Invalid value: '{item_id}'. No conversation item with this id."
            await self.error(_error("invalid_value", message, "item_id"), event)
            return
        if item.get("role") != "assistant" or item_id not in self.audio_ms:
            message = "Only model output audio messages can be truncated"
            await self.error(_error("invalid_value", message, "item_id"), event)
            return
        if index != 0 or not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            message = "Invalid 'content_index' or 'audio_end_ms'."
            await self.error(_error("invalid_value", message, "audio_end_ms"), event)
            return
        audio_ms = self.audio_ms[item_id]
        if end_ms > audio_ms:
            # As reported of OpenAI: the refusal names no event, then the audio's end is used.
            message = f"Audio content of {audio_ms}ms is already shorter than {end_ms}ms"
            await self.send("error", error={**_error(None, message), "event_id": None})
            end_ms = audio_ms
        part = item["content"][0] if item["content"] else {}
        said = str(part.get("transcript") or "")
        self.audio_ms[item_id] = end_ms
        if item["content"]:
            item["content"][0] = {**part, "transcript": ""}
        self.truncations.append(Truncation(self.index, item_id, 0, end_ms, audio_ms, said))
        await self.send(
            "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms
        )

    # ------------------------------------------------------------ responses

    async def create_response(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if params.get("conversation") == "none":
            await super().create_response(event)  # read the given text aloud, out of band
            return
        if self.response is not None:
            message = f"Conversation already has an active response in progress: {self.response[0]}"
            await self.error(_error("conversation_already_has_active_response", message), event)
            return
        last = self.items[-1] if self.items else {}
        call = self.config.tool_call
        offered = {tool.get("name") for tool in self.session.get("tools") or []}
        choice = params.get("tool_choice", self.session.get("tool_choice", "auto"))
        response_id = _id("resp")
        if last.get("type") == "function_call_output":
            said = self.config.tool_reply.format(output=last.get("output", ""))
            work = self.speak_reply(response_id, said)
        elif call is not None and call.name in offered and choice != "none":
            work = self.call_tool(response_id, call)
        else:
            work = self.speak_reply(response_id, self.config.reply)
        self.response = (response_id, self.spawn(work))

    def response_object(self, response_id: str, status: str, **fields: Any) -> dict[str, Any]:
        output = self.session["audio"]["output"]
        audio = {"output": {"format": output["format"], "voice": output["voice"]}}
        response = _response(response_id, status, audio=audio, **fields)
        return {**response, "conversation_id": self.conversation_id}

    async def start_output(self, response_id: str, item: dict[str, Any]) -> None:
        await self.send(
            "response.created", response=self.response_object(response_id, "in_progress")
        )
        await asyncio.sleep(self.config.latency.first_audio_s)
        self.replying = _Reply(item)
        await self.send(
            "response.output_item.added", response_id=response_id, output_index=0, item=item
        )
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        await self.send("conversation.item.added", previous_item_id=previous, item=item)

    async def finish_output(self, response_id: str, usage: dict[str, int]) -> None:
        item = self.replying.item if self.replying else {}
        item["status"] = "completed"
        await self.send(
            "response.output_item.done", response_id=response_id, output_index=0, item=item
        )
        previous = self.items[-2]["id"] if len(self.items) > 1 else None
        await self.send("conversation.item.done", previous_item_id=previous, item=item)
        self.response, self.replying = None, None
        done = self.response_object(response_id, "completed", output=[item], usage=usage)
        await self.send("response.done", response=done)

    async def speak_reply(self, response_id: str, said: str) -> None:
        latency, item_id = self.config.latency, _id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        await self.start_output(response_id, item)
        self.audio_ms[item_id] = 0
        where = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        # "audio" in the content_part events (the SDK's Part), "output_audio" in the item.
        await self.send(
            "response.content_part.added", **where, part={"type": "audio", "transcript": ""}
        )
        part: dict[str, Any] = {"type": "output_audio", "transcript": ""}
        item["content"].append(part)
        audio, size = speech_pcm(said), max(2, latency.chunk_bytes)
        pieces, chunks = words(said), -(-len(audio) // size)
        sent_words = 0
        for index, start in enumerate(range(0, len(audio), size)):
            if index:
                await asyncio.sleep(latency.chunk_delay_s)
            if index == self.config.drop_after_chunks:
                await self.hang_up(1011)
                return
            if index == self.config.server_error_after_chunks:
                await self.fail(response_id)
                return
            due = -(-len(pieces) * (index + 1) // chunks)
            for piece in pieces[sent_words:due]:  # the words keep pace with the audio
                part["transcript"] += piece
                await self.send("response.output_audio_transcript.delta", **where, delta=piece)
            sent_words = max(sent_words, due)
            chunk = audio[start : start + size]
            self.audio_ms[item_id] = (start + len(chunk)) * 1000 // 2 // SAMPLE_RATE
            self.spoke = True
            await self.send(
                "response.output_audio.delta", **where, delta=base64.b64encode(chunk).decode()
            )
        await self.send("response.output_audio.done", **where)
        await self.send("response.output_audio_transcript.done", **where, transcript=said)
        await self.send(
            "response.content_part.done", **where, part={"type": "audio", "transcript": said}
        )
        tokens = len(pieces)
        usage = {
            "total_tokens": tokens + len(audio) // 480,
            "input_tokens": tokens,
            "output_tokens": len(audio) // 480,
        }
        await self.finish_output(response_id, usage)

    async def call_tool(self, response_id: str, call: FakeToolCall) -> None:
        item_id, call_id = _id("item"), _id("call")
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": call_id,
            "arguments": "",
        }
        await self.start_output(response_id, item)
        where = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "call_id": call_id,
        }
        text = call.arguments
        for start in range(0, len(text), ARGUMENT_PIECE_CHARS):
            piece = text[start : start + ARGUMENT_PIECE_CHARS]
            item["arguments"] += piece
            await self.send("response.function_call_arguments.delta", **where, delta=piece)
        await self.send(
            "response.function_call_arguments.done", **where, name=call.name, arguments=text
        )
        usage = {"total_tokens": len(text), "input_tokens": 0, "output_tokens": len(text)}
        await self.finish_output(response_id, usage)

    async def fail(self, response_id: str) -> None:
        error = {"type": "server_error", "code": None, "message": SERVER_ERROR, "param": None}
        await self.send("error", error={**error, "event_id": None})
        self.response = None
        self.end_output("incomplete")
        details = {"type": "failed", "error": {"type": "server_error", "code": None}}
        output = [self.replying.item] if self.replying else []
        self.replying = None
        failed = self.response_object(response_id, "failed", status_details=details, output=output)
        await self.send("response.done", response=failed)

    def end_output(self, status: str) -> None:
        if self.replying is not None:
            self.replying.item["status"] = status

    async def cancel_response(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self.response is None or wanted not in (None, self.response[0]):
            message = "Cannot cancel response: no active response found."
            await self.error(_error("response_cancel_not_active", message), event)
            return
        await self.end_response("client_cancelled")

    async def end_response(self, reason: str) -> None:
        """Cancel the active response: ``response.done`` ``cancelled``, its item incomplete."""
        assert self.response is not None
        response_id, task = self.response
        self.response = None
        task.cancel()
        await asyncio.wait([task])
        self.end_output("incomplete")
        output = [self.replying.item] if self.replying else []
        self.replying = None
        details = {"type": "cancelled", "reason": reason}
        cancelled = self.response_object(
            response_id, "cancelled", status_details=details, output=output
        )
        await self.send("response.done", response=cancelled)


def _tools_problem(tools: Any) -> str | None:
    if not isinstance(tools, list):
        return "Invalid 'session.tools': expected an array."
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return "The fake offers function tools only."
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            return "Missing required parameter: 'session.tools[].name'."
        if not isinstance(tool.get("parameters", {}), dict):
            return "Invalid 'session.tools[].parameters': expected a JSON Schema object."
    return None


def _item_problem(item: Any, items: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Why ``conversation.item.create`` refuses `item` (param, message), or None."""
    if not isinstance(item, dict):
        return "item", "Missing required parameter: 'item'."
    kind = item.get("type")
    if kind == "function_call_output":
        if not isinstance(item.get("output"), str):
            return "item.output", "Missing required parameter: 'item.output'."
        calls = {i.get("call_id") for i in items if i.get("type") == "function_call"}
        if item.get("call_id") not in calls:
            call_id = item.get("call_id")
            return "item.call_id", f"Tool call ID '{call_id}' not found in conversation."
        return None
    if kind == "message" and item.get("role") in ("user", "assistant", "system"):
        return (
            None
            if isinstance(item.get("content"), list)
            else ("item.content", "Invalid 'item.content'.")
        )
    return (
        "item.type",
        f"Invalid value: '{kind}'. The fake takes messages and function_call_output.",
    )


def conversation_routes(config: FakeConversationConfig) -> list[BaseRoute]:
    """The ``/v1/realtime`` WebSocket route of the conversation fake, for any Starlette app."""
    return realtime_routes(config, _ConversationConnection)


def create_fake_conversation_app(config: FakeConversationConfig) -> Starlette:
    return Starlette(routes=conversation_routes(config))


@contextmanager
def running_fake_conversation(
    config: FakeConversationConfig, host: str = "127.0.0.1"
) -> Iterator[str]:
    """Serve the fake under uvicorn in a thread on a free port; yields its base URL (.../v1)."""
    app = create_fake_conversation_app(config)
    with serving_in_thread(app, "fake-realtime-conversation", host) as base_url:
        yield base_url


def arguments_json(**arguments: Any) -> str:
    """JSON text for `FakeToolCall.arguments`."""
    return json.dumps(arguments)
