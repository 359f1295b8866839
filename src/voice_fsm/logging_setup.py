"""structlog set-up: JSON lines by default, a readable console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from voice_fsm.settings import LogSettings


def configure_logging(settings: LogSettings, *, stream: Any = None) -> None:
    stream = stream if stream is not None else sys.stdout
    use_console = settings.format == "console" or (
        settings.format == "auto" and hasattr(stream, "isatty") and stream.isatty()
    )
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    # transitions logs every exception in a callback, cancellations included; the session
    # reports real failures itself, as typed errors.
    logging.getLogger("transitions").setLevel(logging.CRITICAL)
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoise) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(_DenialNoise())
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bindings: Any) -> Any:
    # A lazy proxy: a module-level logger made before configure_logging still follows it.
    return structlog.get_logger("voice_fsm", **bindings)


class _DenialNoise(logging.Filter):
    """uvicorn's WebSocket protocol logs an error after every upgrade the app refuses with an
    HTTP answer (403, 401, 503), which is the normal way to refuse one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."
