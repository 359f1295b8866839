"""Credentials kept out of the WebSocket handshake's debug log.

At DEBUG the `websockets` library (uvicorn's WebSocket protocol) logs each upgrade's request
line and every header before the app sees it, and so before the access guard takes the
`?token=` out of the query: a Bearer key, a Realtime client secret in the subprotocol or a
client token would go to the log with them.
"""

from __future__ import annotations

import logging

CREDENTIAL_HEADERS = frozenset({"authorization", "sec-websocket-protocol", "cookie"})
HANDSHAKE_LOGGERS = ("uvicorn.error", "websockets.server")
"""Where the `websockets` library logs each upgrade's request line and headers at DEBUG."""


class CredentialRedaction(logging.Filter):
    """The values of credential headers and a query holding a token, redacted; the record is
    still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        if record.msg == "< %s: %s" and len(args) == 2:
            if str(args[0]).lower() in CREDENTIAL_HEADERS:
                record.args = (args[0], "[redacted]")
        elif record.msg == "< %s %s %s" and len(args) == 3:
            path, _, query = str(args[1]).partition("?")
            if "token" in query.lower():
                record.args = (args[0], f"{path}?[redacted]", args[2])
        return True


def redact_handshake_logs() -> None:
    """Put `CredentialRedaction` on the loggers the WebSocket handshake is logged to (once)."""
    for name in HANDSHAKE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, CredentialRedaction) for f in logger.filters):
            logger.addFilter(CredentialRedaction())
