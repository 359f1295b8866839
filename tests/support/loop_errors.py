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
    """Keeps the ``asyncio`` logger's reports of unretrieved task and future exceptions.

    On exit it runs the garbage collector over `generation` (0-2) first: a task that is only
    part of a reference cycle is freed, and reported, by the collector. A full collection
    (2) costs about 100 ms in the test process, so the per-test check sweeps the young
    generations (1) and a per-module check the whole heap.
    """

    def __init__(self, generation: int = 2) -> None:
        super().__init__(level=logging.ERROR)
        self.reports: list[str] = []
        self._generation = generation

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
        gc.collect(self._generation)
        logging.getLogger("asyncio").removeHandler(self)
