"""The shape the session core keeps: small modules, a small session class, no lock around the
machine. (That only the driver task fires triggers is checked for every session the tests open:
see `record_trigger_callers` in conftest.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import voice_fsm

PACKAGE = Path(voice_fsm.__file__).parent
MAX_MODULE_LINES = 300
MAX_SESSION_CLASS_LINES = 250
# The modules that hold the machine and drive it.
CORE = (
    "session.py",
    "session_machine.py",
    "machine.py",
    "stage_runner.py",
    "stage_results.py",
    "stages.py",
    "replying.py",
    "turn_taking.py",
)


def modules() -> list[Path]:
    found = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    assert len(found) > 50, found  # the package is where this test thinks it is
    return found


def test_no_module_outside_testing_is_over_300_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules()}
    over = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not over, over


def test_the_session_class_is_under_250_lines() -> None:
    tree = ast.parse((PACKAGE / "session.py").read_text())
    (session,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Session"]
    assert session.end_lineno is not None
    assert session.end_lineno - session.lineno + 1 < MAX_SESSION_CLASS_LINES


def test_no_lock_or_context_copy_around_the_machine() -> None:
    for name in CORE:
        tree = ast.parse((PACKAGE / name).read_text())
        names = {
            node.attr if isinstance(node, ast.Attribute) else node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute | ast.Name)
        }
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not names & {"Lock", "copy_context"}, name
        assert "contextvars" not in imported, name
