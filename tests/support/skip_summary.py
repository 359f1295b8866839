"""A pytest plugin (loaded by tests/conftest.py): at the end of a run, how many tests were
skipped and why, grouped by reason, so a run that skipped the browser or engine tests is not
mistaken for one that ran them. `-ra` lists each skip by place; this counts them by cause."""

from __future__ import annotations

import os
from collections import Counter

import pytest


def skip_reasons(reports: list[pytest.TestReport]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for report in reports:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    return reasons


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report, pytest.TestReport)
    ]
    if not skipped:
        return
    count = len(skipped)
    terminalreporter.section(
        f"{count} test{'s' if count != 1 else ''} skipped", sep="=", yellow=True, bold=True
    )
    for reason, times in skip_reasons(skipped).most_common():
        terminalreporter.line(f"{times:5d} x {reason}")
    if os.environ.get("CI") != "true":
        terminalreporter.line(
            "(with CI=true, as .ci/run sets, a test missing a program fails instead of skipping)"
        )
