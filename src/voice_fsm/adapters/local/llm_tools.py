"""Tool calls with the embedded language model: the prompt that offers tools, the tool results
put back into the conversation, and the calls read out of the streamed reply.

Measured on Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), 8 questions that need a tool and 8 that do
not, temperature 0:

- Offering tools: the GGUF's own chat template (Qwen's `# Tools` system section, rendered by
  llama-cpp-python's Jinja2ChatFormatter from `tools=`) called the right tool for 8 of 8 and
  no tool for 8 of 8. With the spoken-style examples after the system prompt it called none
  (0 of 8), even with a tool-call exchange among them: the examples teach answering at once.
  So a prompt that offers tools has no examples.
- Tool results: in Qwen's own format (an assistant `<tool_call>`, then `<tool_response>` in a
  user turn) the model called tools again in a loop or echoed the result's JSON, with or
  without tools offered. Written into the user's question as a note, with the examples and
  no tools offered, it answered 7 of 7 right ("17 times 23 equals 391."). So a reply to tool
  results offers no tools: one round of calls per turn.

`<tool_call>` and `</tool_call>` are special tokens that llama-cpp-python leaves out of the
streamed text, so a call shows as its bare JSON object; a literal tag is read as well.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from llama_cpp.llama_types import ChatCompletionTool

from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
MAX_CALL_CHARS = 4000
"""A call's JSON longer than this is dropped: the model is looping, not calling."""
MAX_CALLS = 4
"""Calls read from one reply; later ones are dropped."""
MAX_RESULT_NOTE_CHARS = 2000
"""A tool result is cut to this in the prompt (the tool runner bounds it too)."""


def tool_params(tools: Sequence[ToolSpec]) -> list[ChatCompletionTool]:
    """The tools as the chat template's `tools` (the OpenAI shape Qwen's template dumps)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def answers_tool_results(messages: Sequence[ChatMessage]) -> bool:
    """Whether the model is asked to answer with tool results (a tool message after the last
    user message), when it is offered no tools (see the module's note)."""
    for message in reversed(messages):
        if message.role == "tool":
            return True
        if message.role == "user":
            return False
    return False


def fold_tool_results(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The conversation with each round of tool calls written into the user message before it:
    "<question>\\n\\n(The clock tool answered: {...})". An assistant message that only made
    calls is dropped; one with text keeps its text."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            names.update((call.call_id, call.name) for call in message.tool_calls)
            if message.content.strip():
                out.append(ChatMessage("assistant", message.content))
            continue
        if message.role != "tool":
            out.append(message)
            continue
        name = names.get(message.tool_call_id or "", "")
        result = message.content[:MAX_RESULT_NOTE_CHARS]
        note = f"(The {name} tool answered: {result})" if name else f"(A tool answered: {result})"
        # The note joins the question it answers, even past a text-only assistant message.
        index = next((i for i in range(len(out) - 1, -1, -1) if out[i].role == "user"), None)
        if index is None:
            out.append(ChatMessage("user", note))
        else:
            out[index] = ChatMessage("user", f"{out[index].content}\n\n{note}")
    return out


class ToolCallParser:
    """Splits the streamed text of a reply offered tools into the text to speak and the calls.

    Text that may begin a call (a `{` or a `<`) is held until it is known; a call is its JSON
    object, `{"name": ..., "arguments": {...}}`, complete when its braces close. Neither the
    tags nor the JSON are ever passed on as text, and text after a call is dropped (the model
    answers once it has the results).
    """

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        # The argument names of tools that take no others (to drop what the model invents).
        self._closed = {
            t.name: set(t.parameters.get("properties") or ())
            for t in tools
            if not t.parameters.get("properties")
            or t.parameters.get("additionalProperties") is False
        }
        self._held = ""
        self._space = ""  # whitespace after the text passed on: spoken only if text follows
        self._in_call = False
        self.calls = 0
        self.settled = False
        """A call to a tool that takes no arguments was read from its name: whatever the
        model writes next is not worth waiting for (it invents arguments for the clock, some
        seventy tokens of them, about 3 s here)."""

    @property
    def in_call(self) -> bool:
        """Whether a call's JSON is being written (or one was made: only calls follow)."""
        return self._in_call or self.calls > 0

    def feed(self, delta: str) -> list[str | ToolCall]:
        self._held += delta
        out: list[str | ToolCall] = []
        while self._held:
            if self._in_call:
                if not self._read_call(out):
                    break
                continue
            start, known = _call_start(self._held)
            if start is None:  # nothing that may begin a call
                self._text(out, self._held)
                self._held = ""
            elif start > 0:
                self._text(out, self._held[:start])
                self._held = self._held[start:]
            elif known is None:  # "<tool" or '{ "na': wait for more
                break
            elif known:
                self._held = self._held.removeprefix(OPEN_TAG).lstrip()
                self._space = ""
                self._in_call = True
            else:  # a brace or a "<" of plain text
                self._text(out, self._held[0])
                self._held = self._held[1:]
        return out

    def finish(self) -> list[str | ToolCall]:
        """The reply has ended: held text is passed on; an unfinished call is dropped."""
        held, self._held = self._held, ""
        out: list[str | ToolCall] = []
        if not self._in_call:
            self._text(out, held)
        return out

    def _text(self, out: list[str | ToolCall], text: str) -> None:
        if self.calls:
            return
        whole = self._space + text
        body = whole.rstrip()
        self._space = whole[len(body) :]
        if body:
            out.append(body)

    def _read_call(self, out: list[str | ToolCall]) -> bool:
        """Read a call's JSON from the held text; False when it is not complete yet."""
        held = self._held.lstrip()
        if not held:
            self._held = ""
            return False
        if not held.startswith("{"):  # "<tool_call>" then no object: not a call after all
            self._in_call = False
            self._held = held.removeprefix(CLOSE_TAG)
            return True
        end = _object_end(held)
        name = _named_call(held) if end is None else None
        if name is not None and self._closed.get(name) == set() and self.calls < MAX_CALLS:
            self.calls += 1
            self.settled = True
            self._in_call, self._held = False, ""
            out.append(ToolCall(f"call_{uuid.uuid4().hex[:16]}", name, "{}"))
            return False
        if end is None:
            if len(held) > MAX_CALL_CHARS:
                self._in_call, self._held = False, ""
                self.calls = MAX_CALLS  # a runaway: nothing more is read from this reply
            else:
                self._held = held
            return False
        self._in_call = False
        self._held = held[end:].lstrip().removeprefix(CLOSE_TAG)
        call = self._to_call(held[:end])
        if call is not None and self.calls < MAX_CALLS:
            self.calls += 1
            out.append(call)
        return True

    def _to_call(self, text: str) -> ToolCall | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(name := data.get("name"), str):
            return None
        arguments: Any = data.get("arguments", data.get("parameters", {}))
        known = self._closed.get(name)
        if known is not None and isinstance(arguments, dict):
            # The 0.5B model invents arguments: {"day": "today"} for the clock, which takes
            # none, and copies the schema into them ("type": "string" beside the calculator's
            # expression, in 4 of 6 calls): the call would fail on a name it cannot use.
            arguments = {key: value for key, value in arguments.items() if key in known}
        text_arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return ToolCall(f"call_{uuid.uuid4().hex[:16]}", name, text_arguments)


_NAMED_CALL = re.compile(r'^\{\s*"name"\s*:\s*"([^"\\]+)"\s*,\s*"(?:arguments|parameters)"\s*:')


def _named_call(text: str) -> str | None:
    """The tool's name once a call's JSON has got past it to its arguments."""
    match = _NAMED_CALL.match(text)
    return match.group(1) if match else None


def _call_start(text: str) -> tuple[int | None, bool | None]:
    """Where a call may begin in `text`, and whether it does (None: not known yet)."""
    starts = [i for i in (text.find("{"), text.find("<")) if i >= 0]
    if not starts:
        return None, None
    start = min(starts)
    rest = text[start:]
    if rest.startswith("<"):
        if rest.startswith(OPEN_TAG):
            return start, True
        return start, None if OPEN_TAG.startswith(rest) else False
    key = rest[1:].lstrip()
    if key.startswith('"name"'):
        return start, True
    if '"name"'.startswith(key):  # also an empty key: the brace was the last character
        return start, None
    return start, False


def _object_end(text: str) -> int | None:
    """The end of the JSON object `text` begins with, or None while it is unfinished."""
    depth, in_string, escaped = 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None
