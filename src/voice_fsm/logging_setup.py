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
    return structlog.get_logger("voice_fsm").bind(**bindings)
