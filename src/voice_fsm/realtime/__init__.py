"""The Realtime API served over voice-fsm's cascade (`/v1/realtime`).

`front_end.py` turns the API's client events into the session core's commands, `render.py`
turns the core's events into the API's server events; both build them from the `openai`
SDK's own models (`wire.py`), so their shapes are the SDK's.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from voice_fsm.connection import ClientConnection
from voice_fsm.endpoint import FrontEndFactory
from voice_fsm.realtime.front_end import RealtimeFrontEnd
from voice_fsm.settings import Settings

__all__ = ["RealtimeFrontEnd", "realtime_front_end"]


def realtime_front_end(settings: Settings) -> FrontEndFactory:
    """What the endpoint makes for each `/v1/realtime` connection: its front end, with the
    `model` the client asked for (reported back in its session)."""

    def make(websocket: WebSocket, connection: ClientConnection) -> RealtimeFrontEnd:
        model = websocket.query_params.get("model")
        return RealtimeFrontEnd(connection, settings, model[:100] if model else None)

    return make
