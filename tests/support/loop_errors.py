"""Catching what asyncio reports about exceptions nobody retrieved.

When a task or future that holds an exception is freed without anyone having looked at it,
asyncio calls the loop's exception handler ("Task exception was never retrieved"), and the
default handler logs it on the ``asyncio`` logger. Nothing fails: the report is easy to miss,
and it means an error (or a worker's cancellation) went nowhere. `UnretrievedExceptions` is a
logging handler on that logger that keeps those reports; the autouse fixture in conftest.py
fails any test during which one arrives.
"""

from __future__ import annotations

import gc
import logging
import traceback

PATTERNS = ("Task exception was never retrieved", "Future exception was never retrieved")


class UnretrievedExceptions(logging.Handler):
    """Keeps the ``asyncio`` logger's reports of unretrieved task and future exceptions."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not any(pattern in message for pattern in PATTERNS):
            return
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += "\n" + "".join(traceback.format_exception(error)).rstrip()
        self.reports.append(message)

    def __enter__(self) -> UnretrievedExceptions:
        logging.getLogger("asyncio").addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        # Tasks that are only part of a reference cycle are freed (and reported) by the
        # collector: give them their chance while we still listen.
        gc.collect()
        logging.getLogger("asyncio").removeHandler(self)
