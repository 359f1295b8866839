"""Every name the server shares with the page, as plain data, and the page's copy of them.

The names are defined once, in Python: the machine's states and triggers (`machine`), the stages
and error codes (`errors`), the message types and modes (`events`), the audio format (`audio`)
and the protocol version. `render_constants_js` writes them as ``web/constants.js``, which
``make docs`` regenerates and every module of the page imports instead of keeping its own copy.

`machine_table` reads machine.py's table when it is called, so the docs and the page follow a
state or a transition added there with no other edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

SOURCES = (
    "voice_fsm.machine (State, TRANSITIONS, BUSY_STATES, REPLY_STATES)",
    "voice_fsm.errors (Stage, ErrorCode, RETRYABLE_CODES, MESSAGE_LEVEL_CODES)",
    "voice_fsm.events (message types, Mode, AudioFormat)",
    "voice_fsm.audio (SAMPLE_RATE, BYTES_PER_SAMPLE)",
    "voice_fsm.PROTOCOL_VERSION",
)


@dataclass(frozen=True)
class Edge:
    """One row of the transition table: `trigger` takes any of `sources` to `dest`."""

    trigger: str
    sources: tuple[str, ...]
    dest: str
    why: str = ""


@dataclass(frozen=True)
class MachineTable:
    """The session's state machine as names: what the docs draw and the page shows."""

    states: tuple[str, ...]
    initial: str
    transitions: tuple[Edge, ...]
    busy: tuple[str, ...] = ()
    reply: tuple[str, ...] = ()


def machine_table() -> MachineTable:
    """machine.py's table, read now (a test that extends it is seen)."""
    from voice_fsm import machine

    return MachineTable(
        states=tuple(str(state.value) for state in machine.State),
        initial=str(machine.State.IDLE.value),
        transitions=tuple(
            Edge(
                trigger=t["trigger"],
                sources=tuple(str(s.value) for s in t["source"]),
                dest=str(t["dest"].value),
                why=t["why"],
            )
            for t in machine.TRANSITIONS
        ),
        busy=tuple(str(s.value) for s in machine.BUSY_STATES),
        reply=tuple(str(s.value) for s in machine.REPLY_STATES),
    )


def constant_name(value: str) -> str:
    """The JS key of a name: 'session.created' -> SESSION_CREATED, 'no-speech' -> NO_SPEECH."""
    return "".join(c if c.isalnum() else "_" for c in value).upper()


def message_types(adapter: Any) -> list[str]:
    """The `type` of every message of a discriminated union, in its order."""
    mapping: dict[str, str] = adapter.json_schema()["discriminator"]["mapping"]
    return list(mapping)


def shared_names(table: MachineTable | None = None) -> dict[str, Any]:
    """Every shared name, keyed by its JS constant, in the order constants.js gives them."""
    from voice_fsm import PROTOCOL_VERSION, audio, errors, events

    table = table or machine_table()
    wire = events.AudioFormat()
    return {
        "PROTOCOL": PROTOCOL_VERSION,
        "AUDIO": {
            "encoding": wire.encoding,
            "sampleRate": audio.SAMPLE_RATE,
            "channels": wire.channels,
            "bytesPerSample": audio.BYTES_PER_SAMPLE,
        },
        "SAMPLE_RATE": audio.SAMPLE_RATE,
        "STATE": _by_name(table.states),
        "STATES": list(table.states),
        "INITIAL_STATE": table.initial,
        "BUSY_STATES": list(table.busy),
        "REPLY_STATES": list(table.reply),
        "TRANSITIONS": [
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in table.transitions
        ],
        "TRIGGER": _by_name(dict.fromkeys(t.trigger for t in table.transitions)),
        "STAGE": {stage.name: stage.value for stage in errors.Stage},
        "ERROR_CODE": {code.name: code.value for code in errors.ErrorCode},
        "RETRYABLE_CODES": [c.value for c in errors.ErrorCode if c in errors.RETRYABLE_CODES],
        "MESSAGE_LEVEL_CODES": [
            c.value for c in errors.ErrorCode if c in errors.MESSAGE_LEVEL_CODES
        ],
        "MODE": _by_name(get_args(events.Mode)),
        "PIPELINE": _by_name(get_args(events.PipelineName)),
        "CLIENT_EVENT": _by_name(message_types(events.client_event_adapter)),
        "SERVER_EVENT": _by_name(message_types(events.server_event_adapter)),
    }


DOCS = {
    "PROTOCOL": "The WebSocket protocol's version (session.created.protocol).",
    "AUDIO": "Binary frames, both ways: raw PCM16 little-endian mono at this rate.",
    "SAMPLE_RATE": "AUDIO.sampleRate: samples a second of the audio on the wire.",
    "STATE": "The session's states (machine.State), by name.",
    "STATES": "The states in the machine's order; the initial state first.",
    "INITIAL_STATE": "Where every session starts and every turn ends.",
    "BUSY_STATES": "States in which a turn is under way.",
    "REPLY_STATES": "States in which a reply is in flight (input_audio.start barges in).",
    "TRANSITIONS": "machine.py's TRANSITIONS: {trigger, source: [states], dest}, in its order.",
    "TRIGGER": "The machine's trigger names, by name.",
    "STAGE": "The stage an error event names (errors.Stage).",
    "ERROR_CODE": "Every code an error event can carry (errors.ErrorCode).",
    "RETRYABLE_CODES": "Codes for which waiting and trying again can help.",
    "MESSAGE_LEVEL_CODES": "Errors in a client's message: reported, and the turn goes on.",
    "MODE": "The turn-taking modes (session.update.session.mode).",
    "PIPELINE": "The pipelines a session may run (session.update.session.pipeline).",
    "CLIENT_EVENT": "The type of every client -> server message.",
    "SERVER_EVENT": "The type of every server -> client message.",
}


def _by_name(values: Iterable[str]) -> dict[str, str]:
    return {constant_name(value): value for value in values}


def js_literal(value: Any, indent: str = "") -> str:
    """`value` as a frozen JS literal, strings single-quoted; records and objects one item a
    line unless they are short."""
    inner = indent + "  "
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        items = [f"{key}: {js_literal(item, inner)}" for key, item in value.items()]
        one_line = f"Object.freeze({{ {', '.join(items)} }})"
        fits = len(inner) + len(one_line) < 110
        if fits and not any(isinstance(item, Mapping) for item in value.values()):
            return one_line
        lines = "".join(f"{inner}{item},\n" for item in items)
        return f"Object.freeze({{\n{lines}{indent}}})"
    if isinstance(value, list):
        items = [js_literal(item, inner) for item in value]
        if all(not isinstance(item, Mapping) for item in value):
            return f"Object.freeze([{', '.join(items)}])"
        lines = "".join(f"{inner}{item},\n" for item in items)
        return f"Object.freeze([\n{lines}{indent}])"
    raise TypeError(f"no JS literal for {value!r}")


def render_constants_js(table: MachineTable | None = None) -> str:
    """The whole text of web/constants.js."""
    lines = [
        "// Generated by `make docs` (python -m voice_fsm.docs_gen) from:",
        *(f"//   {source}" for source in SOURCES),
        "// Do not edit: change the Python and run `make docs` (tests/test_docs.py fails while",
        "// this file is stale). Every name the page shares with the server comes from here.",
    ]
    for name, value in shared_names(table).items():
        lines += ["", f"/** {DOCS[name]} */", f"export const {name} = {js_literal(value)};"]
    return "\n".join(lines) + "\n"
