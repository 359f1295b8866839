"""docs/realtime-compatibility.md covers the GA Realtime API exactly, and honestly.

Its two tables list every client and every server event type of the installed `openai` SDK's
discriminated unions (`RealtimeClientEvent`, `RealtimeServerEvent`), none twice and none that
isn't in them, each with a status from a fixed set. A `supported` row names the tests that show
it working, and those tests exist; any other status says why (or, for `not yet`, the plan).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "realtime-compatibility.md"
STATUSES = {"supported", "accepted-and-ignored", "refused", "not yet"}
TABLES = {"Client events": RealtimeClientEvent, "Server events": RealtimeServerEvent}
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


@dataclass(frozen=True)
class Row:
    event: str
    status: str
    notes: str
    tests: str


def union_types(union: Any) -> list[str]:
    """The `type` literals of one of the SDK's annotated discriminated unions, in its order."""
    models = get_args(get_args(union)[0])
    return [get_args(model.model_fields["type"].annotation)[0] for model in models]


def section(text: str, title: str) -> str:
    """The body of the `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/realtime-compatibility.md has no '## {title}' section"
    return match.group(1)


def rows(title: str) -> list[Row]:
    """The event rows of a section's table: `| \\`type\\` | status | notes | tests |`."""
    found = []
    for line in section(PAGE.read_text(encoding="utf-8"), title).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"{title}: a row needs 4 cells: {line}"
        found.append(Row(cells[0].strip("`"), cells[1], cells[2], cells[3]))
    return found


def test_the_unions_are_read_whole() -> None:
    # A guard on the reader: if the SDK changed how it declares the unions, union_types would
    # return nothing and the comparisons below would prove nothing.
    assert "session.update" in union_types(RealtimeClientEvent)
    assert "response.done" in union_types(RealtimeServerEvent)
    assert len(union_types(RealtimeClientEvent)) >= 11
    assert len(union_types(RealtimeServerEvent)) >= 40


@pytest.mark.parametrize("title", TABLES)
def test_every_event_type_of_the_sdk_is_listed_once(title: str) -> None:
    listed = [row.event for row in rows(title)]
    sdk = union_types(TABLES[title])
    assert sorted(set(sdk) - set(listed)) == [], f"{title}: missing from the page"
    assert sorted(set(listed) - set(sdk)) == [], f"{title}: not in the SDK's union"
    assert sorted({e for e in listed if listed.count(e) > 1}) == [], f"{title}: listed twice"


@pytest.mark.parametrize("title", TABLES)
def test_every_status_is_one_of_the_four(title: str) -> None:
    wrong = {row.event: row.status for row in rows(title) if row.status not in STATUSES}
    assert wrong == {}


@pytest.mark.parametrize("title", TABLES)
def test_every_status_but_supported_says_why(title: str) -> None:
    # accepted-and-ignored says why, refused says with which error, not yet gives the plan.
    silent = [row.event for row in rows(title) if row.status != "supported" and len(row.notes) < 20]
    assert silent == []
    refused = [row for row in rows(title) if row.status == "refused"]
    assert [row.event for row in refused if "error" not in row.notes] == []


@pytest.mark.parametrize("title", TABLES)
def test_supported_rows_name_tests_that_exist(title: str) -> None:
    for row in rows(title):
        if row.status != "supported":
            continue
        refs = TEST_REF.findall(row.tests)
        assert refs, f"{row.event} is marked supported without a test that shows it"
        for path, name in refs:
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            defined = {
                node.name
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert name in defined, f"{row.event}: {path}::{name} does not exist"


def test_the_page_says_how_to_connect_and_what_differs() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for title in ("How to connect", "What differs from OpenAI"):
        assert section(text, title).strip()
    connect = section(text, "How to connect")
    for needle in ("base_url", "websocket_base_url", "Authorization: Bearer", "model"):
        assert needle in connect
