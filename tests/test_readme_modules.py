"""The README's architecture table names every module, so a newcomer finds each one there."""

from __future__ import annotations

from pathlib import Path

import voice_fsm

PACKAGE = Path(voice_fsm.__file__).parent
README = Path(__file__).resolve().parent.parent / "README.md"


def architecture_section() -> str:
    text = README.read_text()
    start = text.index("## Architecture")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_outside_testing_is_named_in_the_architecture_table() -> None:
    section = architecture_section()
    modules = [
        path
        for path in PACKAGE.rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
        and "testing" not in path.relative_to(PACKAGE).parts
    ]
    assert len(modules) > 50
    missing = sorted(
        str(path.relative_to(PACKAGE)) for path in modules if f"`{path.name}`" not in section
    )
    assert not missing, f"add them to the README's architecture table: {missing}"
