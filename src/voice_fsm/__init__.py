"""voice-fsm: a voice agent server driven by a state machine per WebSocket session."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
