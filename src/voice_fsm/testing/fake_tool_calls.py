"""Tool calls for the fake OpenAI server: a scripted "model" that decides what to answer, the
checks OpenAI makes on tools and tool messages, and the wire shapes of the calls.

A script is a callable ``(messages, tools) -> FakeAnswer | None`` given the request's JSON
messages and tools; None answers with the configured reply. `calling` builds the usual one: it
calls tools on the user's message and answers their results; `disobedient` builds a model that
does not follow instructions, for the tests of what the session does then.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FakeAnswer:
    """What the fake model answers: `text`, then `tool_calls` as (name, arguments); arguments
    given as a dict are sent as its JSON, as a string verbatim (so it can be invalid JSON)."""

    text: str = ""
    tool_calls: Sequence[tuple[str, JsonObject | str]] = ()


ChatScript = Callable[[list[JsonObject], list[JsonObject]], FakeAnswer | None]
"""``(messages, tools) -> answer``: the fake model. None answers with the configured reply."""


@dataclass(frozen=True, slots=True)
class WireCall:
    """A call as the fake sends it: its id and the JSON text of its arguments."""

    call_id: str
    name: str
    arguments: str


class InvalidRequest(ValueError):
    """A request OpenAI would refuse with 400; the server answers with OpenAI's error body."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def tool_results(messages: list[JsonObject]) -> list[str]:
    """The contents of the tool messages at the end of `messages` (the results the model has
    not answered yet), in order."""
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, str(message.get("content", "")))
    return results


def tool_names(tools: list[JsonObject]) -> list[str]:
    return [str(tool["function"]["name"]) for tool in tools]


def calling(
    *calls: tuple[str, JsonObject | str],
    text: str = "",
    answer: Callable[[list[str]], str] = lambda results: (
        "Here is what I found: " + "; ".join(results)
    ),
) -> ChatScript:
    """A model that answers the user's message, when tools are offered, with `text` then
    `calls`, and answers tool results with `answer(results)`. Without tools it says the
    configured reply."""

    def script(messages: list[JsonObject], tools: list[JsonObject]) -> FakeAnswer | None:
        results = tool_results(messages)
        if results:
            return FakeAnswer(answer(results))
        if tools and messages and messages[-1].get("role") == "user":
            return FakeAnswer(text, calls)
        return None

    return script


def disobedient(mistake: Literal["unknown-tool", "invalid-json"], *, text: str = "") -> ChatScript:
    """A model that does not follow instructions: offered tools, it calls one that was not
    offered (``unknown-tool``) or the first offered with arguments that are not JSON
    (``invalid-json``); given the error it then gets, it answers with the error's text."""

    def script(messages: list[JsonObject], tools: list[JsonObject]) -> FakeAnswer | None:
        results = tool_results(messages)
        if results:
            return FakeAnswer("Sorry, that did not work: " + "; ".join(results))
        if not tools or not messages or messages[-1].get("role") != "user":
            return None
        wrong: tuple[str, JsonObject | str]
        if mistake == "unknown-tool":
            wrong = ("launch_rockets", {"count": 3})
        else:
            wrong = (tool_names(tools)[0], '{"city": "Par')  # cut off mid-string
        return FakeAnswer(text, [wrong])

    return script


def wire_calls(answer: FakeAnswer) -> list[WireCall]:
    """`answer`'s calls with OpenAI-style ids (``call_`` and 24 characters)."""
    return [
        WireCall(
            "call_" + uuid.uuid4().hex[:24],
            name,
            arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
        for name, arguments in answer.tool_calls
    ]


def argument_fragments(arguments: str) -> list[str]:
    """`arguments` in the pieces OpenAI streams it in: words and runs of punctuation, so
    ``{"city":"Paris"}`` comes as ``{"``, ``city``, ``":"``, ``Paris``, ``"}``."""
    return re.findall(r"\w+|\s+|[^\w\s]+", arguments)


def streamed_call_deltas(calls: list[WireCall], *, first: bool) -> list[JsonObject]:
    """The deltas that stream `calls` as OpenAI does: each call's first delta has its index,
    id, type and name with empty arguments, then its arguments come in fragments with only
    the index. `first` when no delta came before (no text): that one also has the role."""
    deltas: list[JsonObject] = []
    for index, call in enumerate(calls):
        opening = {
            "index": index,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        if first and index == 0:
            deltas.append(
                {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None}
            )
        else:
            deltas.append({"tool_calls": [opening]})
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in argument_fragments(call.arguments)
        )
    return deltas


def message_tool_calls(calls: list[WireCall]) -> list[JsonObject]:
    """`calls` as a non-streaming completion's message carries them."""
    return [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]


_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def check_tools(body: JsonObject) -> list[JsonObject]:
    """The request's function tools, checked as OpenAI checks them."""
    if "tools" not in body:
        return []
    tools = body["tools"]
    if not isinstance(tools, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", param="tools")
    if not tools:
        raise InvalidRequest(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            param="tools",
            code="empty_array",
        )
    for position, tool in enumerate(tools):
        where = f"tools[{position}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidRequest(f"Invalid value for '{where}.type'.", param=f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            message = f"Missing required parameter: '{where}.function'."
            raise InvalidRequest(message, param=f"{where}.function")
        if not isinstance(function.get("name"), str) or not _NAME.match(function["name"]):
            raise InvalidRequest(
                f"Invalid '{where}.function.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
    return tools


def check_tool_messages(messages: list[Any]) -> None:
    """Refuse, as OpenAI does, a tool message that answers no call just before it, and an
    assistant message whose calls are not all answered right after it."""
    waiting: dict[str, int] = {}  # call id -> position of the assistant message
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"Invalid type for 'messages[{position}]': expected an object.",
                param=f"messages[{position}]",
            )
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in waiting:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{position}].role",
                )
            del waiting[message["tool_call_id"]]
            continue
        _check_answered(waiting)
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                    where = f"messages[{position}].tool_calls"
                    raise InvalidRequest(f"Invalid value for '{where}'.", param=where)
                waiting[call["id"]] = position
    _check_answered(waiting)


def _check_answered(waiting: dict[str, int]) -> None:
    if waiting:
        raise InvalidRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(waiting)}",
            param=f"messages.[{min(waiting.values())}].role",
        )
