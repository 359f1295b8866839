"""The docs agree with the code.

Generated parts are current, docs/protocol.md covers every message and error code with valid
examples, and .env.example lists every setting with its real default.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import AliasChoices, BaseModel

from voice_fsm import docs_gen, machine
from voice_fsm.errors import ErrorCode
from voice_fsm.events import ClientEvent, ServerEvent, client_event_adapter, server_event_adapter
from voice_fsm.settings import Settings
from voice_fsm.shared_names import Edge, MachineTable, render_constants_js

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
ENV_EXAMPLE = ROOT / ".env.example"
GENERATED = (
    docs_gen.SCHEMA_PATH,
    docs_gen.STATES_PATH,
    docs_gen.README_PATH,
    docs_gen.OBSERVABILITY_PATH,
    docs_gen.SETTINGS_PATH,
    docs_gen.ENV_EXAMPLE_PATH,
    docs_gen.WEB_CONSTANTS_PATH,
)


def event_types(union: Any) -> set[str]:
    """The `type` literals of an annotated discriminated union of event models."""
    models = get_args(get_args(union)[0])
    return {get_args(model.model_fields["type"].annotation)[0] for model in models}


CLIENT_TYPES = event_types(ClientEvent)
SERVER_TYPES = event_types(ServerEvent)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VOICE_FSM_* or OPENAI_* variable from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith(("VOICE_FSM_", "OPENAI_")):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- generated docs


def test_generated_docs_are_current() -> None:
    stale = docs_gen.stale_files(ROOT)
    assert stale == [], f"stale: {', '.join(map(str, stale))}; run `make docs`"


def copy_generated(to: Path) -> None:
    for path in GENERATED:
        (to / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, to / path)


def test_check_lists_stale_files_and_a_run_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_generated(tmp_path)
    (tmp_path / docs_gen.SCHEMA_PATH).write_text("{}\n", encoding="utf-8")
    states = tmp_path / docs_gen.STATES_PATH
    states.write_text(
        states.read_text(encoding="utf-8").replace("| `stop` |", "| `halt` |"), encoding="utf-8"
    )

    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: docs/protocol.schema.json" in err
    assert "stale: docs/states.md" in err
    assert "README.md" not in err

    assert docs_gen.main(["--root", str(tmp_path)]) == 0
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 0
    for path in GENERATED:
        assert (tmp_path / path).read_bytes() == (ROOT / path).read_bytes()


def test_a_stale_web_constants_js_is_listed_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_generated(tmp_path)
    constants = tmp_path / docs_gen.WEB_CONSTANTS_PATH
    constants.write_text(
        constants.read_text(encoding="utf-8").replace("'barge_in'", "'interrupt'"),
        encoding="utf-8",
    )

    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == "stale: web/constants.js"
    assert docs_gen.main(["--root", str(tmp_path)]) == 0
    assert constants.read_bytes() == (ROOT / docs_gen.WEB_CONSTANTS_PATH).read_bytes()


def test_a_newly_committed_bench_run_makes_the_readme_block_stale_until_make_docs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_generated(tmp_path)
    (tmp_path / "bench").mkdir()
    shutil.copyfile(ROOT / "bench" / "readme_figures.py", tmp_path / "bench" / "readme_figures.py")
    (tmp_path / "docs" / "bench").mkdir(parents=True, exist_ok=True)
    for committed in (ROOT / "docs" / "bench").glob("*.json"):
        shutil.copyfile(committed, tmp_path / "docs" / "bench" / committed.name)
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 0  # the block as committed
    run = {
        "code": "HEAD (0123456789)",
        "date": "2026-12-01 07:00 UTC",
        "load_average": {"before": [0.5, 0.5, 0.5], "after": [0.7, 0.5, 0.5]},
        "question_s": 2.0,
        "client_voice_to_voice_ms": {"errors": 0, "p50": 654.0, "p95": 777.0},
    }
    (tmp_path / "docs" / "bench" / "bench-local.json").write_text(json.dumps(run))
    capsys.readouterr()

    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == "stale: README.md"
    assert docs_gen.main(["--root", str(tmp_path)]) == 0
    block = (tmp_path / "README.md").read_text().split("<!-- bench:begin -->")[1]
    assert "| default: push-to-talk, end of speech → first reply audio | 654 | 777 | 0 |" in block
    assert "`make bench-local` (HEAD (0123456789), 2026-12-01 07:00 UTC" in block
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 0


def test_a_state_added_to_the_table_gets_its_diagram_docs_entry_and_js_constant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Adding a state and a transition to machine.py's table, and nothing else, then `make
    docs`: the diagrams (docs/states.md, README.md), the state's row in docs/states.md and the
    page's constants all have them."""
    extended = StrEnum(
        "State", {s.name: s.value for s in machine.State} | {"TOOL_CALLING": "tool_calling"}
    )
    transitions = [
        *machine.TRANSITIONS,
        {
            "trigger": "tool_called",
            "source": [extended.THINKING],
            "dest": extended.TOOL_CALLING,
            "why": "the language model asked for a tool",
        },
    ]
    monkeypatch.setattr(machine, "State", extended)
    monkeypatch.setattr(machine, "TRANSITIONS", transitions)
    copy_generated(tmp_path)

    assert sorted(map(str, docs_gen.stale_files(tmp_path))) == [
        "README.md",
        "docs/states.md",
        "web/constants.js",
    ]
    assert docs_gen.main(["--root", str(tmp_path)]) == 0

    states = (tmp_path / docs_gen.STATES_PATH).read_text(encoding="utf-8")
    readme = (tmp_path / docs_gen.README_PATH).read_text(encoding="utf-8")
    edge = "    thinking --> tool_calling: tool_called\n"
    assert edge in states.split("```mermaid")[1].split("```")[0]
    assert edge in readme.split("<!-- diagram:begin -->")[1].split("```")[1]
    assert "\n| `tool_calling` | `tool_called` | - |\n" in states
    assert (
        "\n| `thinking` | `stop`, `transcribed`, `respond`, `acted` | "
        "`barge_in`, `replied`, `act`, `spoken`, `cancel`, `fail`, `tool_called` |" in states
    )
    row = "| `tool_called` | thinking | tool_calling | the language model asked for a tool |"
    assert f"\n{row}\n" in states
    js = (tmp_path / docs_gen.WEB_CONSTANTS_PATH).read_text(encoding="utf-8")
    assert "'speaking', 'acting', 'tool_calling']);" in js
    assert "  TOOL_CALLING: 'tool_calling',\n" in js
    assert "  TOOL_CALLED: 'tool_called',\n" in js
    transition = (
        "{ trigger: 'tool_called', source: Object.freeze(['thinking']), dest: 'tool_calling' }"
    )
    assert transition in js
    # The rest of what is generated did not change.
    for path in set(GENERATED) - {
        docs_gen.STATES_PATH,
        docs_gen.README_PATH,
        docs_gen.WEB_CONSTANTS_PATH,
    }:
        assert (tmp_path / path).read_bytes() == (ROOT / path).read_bytes(), path
    # And the session's machine, built from the same table, goes there.
    model = type("Model", (), {})()
    built = machine.build_machine(model)
    assert "tool_calling" in built.states
    assert built.get_transitions("tool_called", "thinking", "tool_calling")


def test_the_docs_functions_take_a_table() -> None:
    table = MachineTable(
        states=("off", "on"),
        initial="off",
        transitions=(Edge("flip", ("off",), "on", "a | b"), Edge("flop", ("on",), "off")),
    )

    assert docs_gen.mermaid_diagram(table) == (
        "stateDiagram-v2\n    [*] --> off\n    off --> on: flip\n    on --> off: flop\n"
    )
    assert "| `flip` | off | on | a \\| b |" in docs_gen.transition_table(table)
    assert "| `off` | the session's start, `flop` | `flip` |" in docs_gen.state_table(table)
    js = render_constants_js(table)
    assert "export const STATES = Object.freeze(['off', 'on']);" in js
    assert "export const INITIAL_STATE = 'off';" in js
    assert "export const TRIGGER = Object.freeze({ FLIP: 'flip', FLOP: 'flop' });" in js


def test_missing_markers_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy_generated(tmp_path)
    (tmp_path / docs_gen.STATES_PATH).write_text("# States\n", encoding="utf-8")

    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 2
    assert "docs/states.md" in capsys.readouterr().err


def test_replace_section_keeps_the_text_around_it() -> None:
    text = "intro\n<!-- s:begin -->\nold\n<!-- s:end -->\noutro\n"

    replaced = docs_gen.replace_section(text, "s", "new\n")

    assert replaced == "intro\n<!-- s:begin -->\nnew\n<!-- s:end -->\noutro\n"
    assert docs_gen.replace_section(replaced, "s", "new\n") == replaced


def test_transition_table_has_a_row_per_transition() -> None:
    table = docs_gen.transition_table()
    assert "| `stop` | recording | transcribing |" in table
    assert "| `cancel` | recording, transcribing, thinking, speaking, acting | idle |" in table


def resolve(document: Any, ref: str) -> Any:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_schema_covers_both_sides_and_its_references_resolve() -> None:
    schema = json.loads(docs_gen.render_schema())

    assert set(schema["client"]["discriminator"]["mapping"]) == CLIENT_TYPES
    assert set(schema["server"]["discriminator"]["mapping"]) == SERVER_TYPES
    all_refs = refs(schema) + [
        ref
        for side in ("client", "server")
        for ref in schema[side]["discriminator"]["mapping"].values()
    ]
    assert all_refs
    for ref in all_refs:
        assert isinstance(resolve(schema, ref), dict), ref


def test_schema_requires_type_on_every_message() -> None:
    schema = json.loads(docs_gen.render_schema())
    for side in ("client", "server"):
        for ref in schema[side]["discriminator"]["mapping"].values():
            assert "type" in resolve(schema, ref)["required"], ref


# ---------------------------------------------------------------- docs/protocol.md


def protocol_text() -> str:
    return PROTOCOL_MD.read_text(encoding="utf-8")


@pytest.mark.parametrize("event_type", sorted(CLIENT_TYPES | SERVER_TYPES))
def test_protocol_md_has_a_section_per_message(event_type: str) -> None:
    assert f"\n### `{event_type}`\n" in protocol_text()


@pytest.mark.parametrize("code", [code.value for code in ErrorCode])
def test_protocol_md_has_a_row_per_error_code(code: str) -> None:
    assert f"\n| `{code}` |" in protocol_text()


def test_protocol_md_examples_are_valid_messages() -> None:
    examples = re.findall(r"```json\n(.*?)```", protocol_text(), flags=re.DOTALL)
    seen: set[str] = set()
    for example in examples:
        data = json.loads(example)
        # `tool.result` goes both ways: a client's example has no `ok`.
        client = data["type"] in CLIENT_TYPES and (
            "ok" not in data or data["type"] != "tool.result"
        )
        adapter = client_event_adapter if client else server_event_adapter
        seen.add(("client " if client else "server ") + adapter.validate_python(data).type)
    assert seen == {f"client {t}" for t in CLIENT_TYPES} | {f"server {t}" for t in SERVER_TYPES}


def test_protocol_md_points_at_the_schema() -> None:
    assert "(protocol.schema.json)" in protocol_text()


# ---------------------------------------------------------------- .env.example


def setting_defaults() -> dict[str, Any]:
    """Every setting's environment variable name and its default."""
    found: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(field.validation_alias, AliasChoices):
            # openai_api_key -> OPENAI_API_KEY: the standard name comes first.
            found[str(field.validation_alias.choices[0])] = field.default
        elif isinstance(group, type) and issubclass(group, BaseModel):
            for sub, subfield in group.model_fields.items():
                found[f"VOICE_FSM_{name}__{sub}".upper()] = subfield.default
        else:
            found[f"VOICE_FSM_{name}".upper()] = field.default
    return found


def env_example_lines() -> dict[str, str]:
    """Variable name -> value for every `NAME=value` or `# NAME=value` line."""
    pattern = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", flags=re.MULTILINE)
    return dict(pattern.findall(ENV_EXAMPLE.read_text(encoding="utf-8")))


def test_nested_settings_get_nested_names() -> None:
    names = setting_defaults()
    assert "VOICE_FSM_LLM__MODEL" in names
    assert "VOICE_FSM_STT__BASE_URL" in names
    assert "OPENAI_API_KEY" in names
    assert "VOICE_FSM_OPENAI_API_KEY" not in names


@pytest.mark.parametrize("name", sorted(setting_defaults()))
def test_env_example_lists_every_setting(name: str) -> None:
    assert name in env_example_lines()


def test_env_example_lists_only_real_settings() -> None:
    assert set(env_example_lines()) <= set(setting_defaults())


def test_env_example_starts_with_the_api_key() -> None:
    assert next(iter(env_example_lines())) == "OPENAI_API_KEY"


def test_env_example_explains_every_setting_on_the_line_above() -> None:
    setting = re.compile(r"^(# )?[A-Z][A-Z0-9_]*=")
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if setting.match(line):
            above = lines[index - 1]
            assert above.startswith("# "), line
            assert not setting.match(above), line


@pytest.mark.usefixtures("clean_env")
def test_env_example_shows_the_real_defaults(tmp_path: Path) -> None:
    # Uncomment every line whose setting has a default; loading them must change nothing.
    defaults = setting_defaults()
    shown = {
        name: value for name, value in env_example_lines().items() if defaults[name] is not None
    }
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in shown.items()), encoding="utf-8")

    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]

    assert loaded.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    assert len(shown) == sum(default is not None for default in defaults.values())


# ---------------------------------------------------------------- the settings' docs say what runs


def readme_defaults() -> dict[str, str]:
    """Variable -> default, from the README's generated settings table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- settings:begin -->") : text.index("<!-- settings:end -->")]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (`([^`]*)`|unset) \|", section, flags=re.MULTILINE)
    return {name: value for name, _cell, value in rows}


def test_every_setting_is_described() -> None:
    from voice_fsm.settings_docs import settings_list

    missing = {s.env for s in settings_list() if not s.description}
    assert not missing, f"add a Field(description=...) to {sorted(missing)}"


@pytest.mark.usefixtures("clean_env")
def test_the_documented_models_are_the_ones_the_server_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voice_fsm import providers

    monkeypatch.setattr(providers, "local_engines_installed", lambda: False)
    pipeline = providers.build_pipeline(Settings(_env_file=None, openai_api_key="sk-test"))  # type: ignore[call-arg]
    running = pipeline.describe()
    shown = readme_defaults()
    # With a key and OpenAI's own API: live transcription, Realtime speech.
    assert running["stt"]["model"] == shown["VOICE_FSM_STT__LIVE_MODEL"] == "gpt-live-transcribe"
    assert running["llm"]["model"] == shown["VOICE_FSM_LLM__MODEL"]
    assert running["tts"] == {"provider": "openai-realtime", "model": shown["VOICE_FSM_TTS__MODEL"]}
    assert env_example_lines()["VOICE_FSM_TTS__MODEL"] == running["tts"]["model"]


def test_the_voice_is_said_to_be_openais_only() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    at = lines.index("# VOICE_FSM_TTS__VOICE=alloy")
    comment = " ".join(line.removeprefix("# ") for line in lines[at - 2 : at])
    assert "OpenAI's voice" in comment
    assert "VOICE_FSM_LOCAL__TTS_VOICE" in comment
    assert "OpenAI's voice" in (ROOT / docs_gen.SETTINGS_PATH).read_text(encoding="utf-8")


def test_docs_settings_md_has_every_setting() -> None:
    text = (ROOT / docs_gen.SETTINGS_PATH).read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert listed == set(setting_defaults())


def test_a_setting_that_disappears_from_the_readme_list_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voice_fsm import settings_docs

    copy_generated(tmp_path)
    monkeypatch.setattr(settings_docs, "README_SETTINGS", ("VOICE_FSM_TTS__GONE",))
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 2
    assert "VOICE_FSM_TTS__GONE" in capsys.readouterr().err


def test_a_changed_default_makes_the_settings_docs_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from voice_fsm.settings import TtsSettings

    copy_generated(tmp_path)
    field = TtsSettings.model_fields["voice"]
    monkeypatch.setattr(field, "default", "verse")
    stale = docs_gen.stale_files(tmp_path)
    assert set(stale) == {docs_gen.README_PATH, docs_gen.SETTINGS_PATH, docs_gen.ENV_EXAMPLE_PATH}
