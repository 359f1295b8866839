"""The session's state machine, declared as data.

`STATES` and `TRANSITIONS` are the single source of truth: the session builds its
`transitions.AsyncMachine` from them and docs/states.md draws its diagram from them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    from transitions.extensions.asyncio import AsyncMachine


class State(StrEnum):
    IDLE = "idle"
    RECORDING = "recording"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ACTING = "acting"


INITIAL = State.IDLE
BUSY_STATES = (State.RECORDING, State.TRANSCRIBING, State.THINKING, State.SPEAKING, State.ACTING)
REPLY_STATES = (State.TRANSCRIBING, State.THINKING, State.SPEAKING, State.ACTING)


Pipeline = Literal["cascade", "speech-to-speech"]
SPEECH_TO_SPEECH: Pipeline = "speech-to-speech"


class Transition(TypedDict):
    trigger: str
    source: list[State]
    dest: State
    why: str
    pipeline: NotRequired[Pipeline]
    """Only in this pipeline (the session's ``config.pipeline``; unset: cascade)."""


TRANSITIONS: list[Transition] = [
    {
        "trigger": "start",
        "source": [State.IDLE],
        "dest": State.RECORDING,
        "why": "input_audio.start: the user starts talking",
    },
    {
        "trigger": "barge_in",
        "source": list(REPLY_STATES),
        "dest": State.RECORDING,
        "why": "input_audio.start while a reply is in flight: it is cancelled",
    },
    {
        "trigger": "stop",
        "source": [State.RECORDING],
        "dest": State.TRANSCRIBING,
        "why": "input_audio.stop: the user's turn is complete",
        "pipeline": "cascade",
    },
    {
        "trigger": "stop",
        "source": [State.RECORDING],
        "dest": State.THINKING,
        "why": "input_audio.stop in speech-to-speech mode: the Realtime model hears the "
        "recording itself and answers aloud (no transcription stage)",
        "pipeline": SPEECH_TO_SPEECH,
    },
    {
        "trigger": "transcribed",
        "source": [State.TRANSCRIBING],
        "dest": State.THINKING,
        "why": "the final transcript arrived",
    },
    {
        "trigger": "heard",
        "source": [State.TRANSCRIBING],
        "dest": State.IDLE,
        "why": "the final transcript arrived, and the client replies only when it asks "
        "(a Realtime client commits its audio, then sends response.create)",
    },
    {
        "trigger": "respond",
        "source": [State.IDLE],
        "dest": State.THINKING,
        "why": "the client asks for a reply to the conversation as it stands "
        "(Realtime response.create)",
    },
    {
        "trigger": "replied",
        "source": [State.THINKING],
        "dest": State.SPEAKING,
        "why": "the first audio of the reply is ready (the rest is still being written)",
    },
    {
        "trigger": "act",
        "source": [State.THINKING, State.SPEAKING],
        "dest": State.ACTING,
        "why": "the language model called tools: they run (speech already started goes on)",
    },
    {
        "trigger": "acted",
        "source": [State.ACTING],
        "dest": State.THINKING,
        "why": "every tool call has a result: the language model is asked again",
    },
    {
        "trigger": "spoken",
        "source": [State.SPEAKING, State.THINKING],
        "dest": State.IDLE,
        "why": "the last reply audio was sent (from thinking: the model had nothing to add "
        "after its tools' results)",
    },
    {
        "trigger": "cancel",
        "source": list(BUSY_STATES),
        "dest": State.IDLE,
        "why": "response.cancel: stop whatever is in flight",
    },
    {
        "trigger": "fail",
        "source": list(BUSY_STATES),
        "dest": State.IDLE,
        "why": "a typed error ended the turn",
    },
]


def build_machine(model: Any, **callbacks: Any) -> AsyncMachine:
    """One machine per session (transitions' queue is per machine)."""
    # Imported here: the states are also read by the event types, which the talk client
    # imports, and it has no machine to run.
    from transitions.extensions.asyncio import AsyncMachine

    return AsyncMachine(
        model=model,
        states=[s.value for s in State],
        transitions=[
            {
                "trigger": t["trigger"],
                "source": [s.value for s in t["source"]],
                "dest": t["dest"].value,
                **({"conditions": [_in(t["pipeline"])]} if "pipeline" in t else {}),
            }
            for t in TRANSITIONS
        ],
        initial=INITIAL.value,
        auto_transitions=False,
        send_event=True,
        **callbacks,
    )


def pipeline_of(model: Any) -> Pipeline:
    """The pipeline a session model runs now: its ``config.pipeline``, cascade when unset."""
    config = getattr(model, "config", None)
    return SPEECH_TO_SPEECH if getattr(config, "pipeline", None) == SPEECH_TO_SPEECH else "cascade"


def _in(pipeline: Pipeline) -> Any:
    def condition(event: Any) -> bool:
        return pipeline_of(event.model) == pipeline

    return condition


class HasState(Protocol):
    @property
    def state(self) -> str: ...


def count_states(sessions: Iterable[HasState]) -> dict[str, int]:
    """Sessions per state: every state of the machine (0 when none is in it), then any other
    state seen, so a state the machine gains later still counts."""
    seen = Counter(str(session.state) for session in sessions)
    counts = {state.value: seen.pop(state.value, 0) for state in State}
    counts.update(sorted(seen.items()))
    return counts
