"""How well the embedded offline agent answers, hears and keeps pace, through the real server.

For each language model asked for (`--llm-model`, repeatable; one `voice-fsm serve` each, with
no API key so every stage is local), every question of bench/questions.json is spoken by Piper
(made here, at run time) and asked over the WebSocket in push-to-talk at the pace of speech.
Prints each question, what the server heard, its reply and whether the reply is right; then the
share of right answers, the word error rate of the transcripts of the synthetic questions and of
real human recordings (Debian's pocketsphinx-testdata: LibriVox and spoken playing cards, 16 kHz,
resampled to 24 kHz and sent through the same server), and the voice-to-voice latency p50/p95 at
the client. Then the tool-call success rate: bench/tool_questions.json asked of the same model
in this process, through the adapter, with the built-in clock and calculator run for it (the
server's reply events do not say which tool ran). Writes artifacts/eval-local.json.

    make eval-local ARGS="--llm-model smollm2-135m --llm-model qwen2.5-coder-0.5b"
    make eval-local ARGS="--only-tools"
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jiwer
from common import base_env, free_port, machine, percentile, start_server, stop_server

from voice_fsm.talk import TalkError, TalkResult, load_wav, talk

QUESTIONS = Path(__file__).with_name("questions.json")
TOOL_QUESTIONS = Path(__file__).with_name("tool_questions.json")
DEBIAN_DATA = Path("/usr/share/pocketsphinx/test/data")
DEBIAN_PACKAGE = "pocketsphinx-testdata"
SDIST = "pocketsphinx"  # its sdist on PyPI carries the same files under test/data/
# --no-binary for it alone: with :all: pip would build its build requirements (cmake) too.
PIP_DOWNLOAD = ("-m", "pip", "download", "-q", "--no-deps", "--no-binary", SDIST)
STAGES = ("stt_ms", "llm_first_token_ms", "llm_ms", "tts_first_audio_ms", "voice_to_voice_ms")

# ---------------------------------------------------------------- normalising text

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_UNITS = {word: value for value, word in enumerate(_NUMBER_WORDS.split())}
_TENS = {
    word: 10 * value
    for value, word in enumerate(
        ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], start=2
    )
}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}  # as Whisper writes them
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}


def words_to_digits(words: Sequence[str]) -> list[str]:
    """Numbers written as words become digits: "three hundred and sixty six" -> "366", "twenty
    one" -> "21", "a hundred" -> "100"; "five five" stays two numbers ("5 5")."""
    out: list[str] = []
    total = current = 0
    last: str | None = None  # the kind of the previous word of the number being read

    def flush() -> None:
        nonlocal total, current, last
        if last is not None:
            out.append(str(total + current))
        total = current = 0
        last = None

    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if word in _UNITS:
            value = _UNITS[word]
            if last == "unit" or (last == "tens" and value >= 10):
                flush()
            current += value
            last = "unit"
        elif word in _TENS:
            if last in ("unit", "tens"):
                flush()
            current += _TENS[word]
            last = "tens"
        elif word == "hundred" and last != "hundred":
            if last is None and out and out[-1] == "a":
                out.pop()
            current = (current or 1) * 100
            last = "hundred"
        elif word in _SCALES:
            if last is None and out and out[-1] == "a":
                out.pop()
            total += (current or 1) * _SCALES[word]
            current = 0
            last = "scale"
        elif (
            word == "and"
            and last in ("hundred", "scale")
            and (following in _UNITS or following in _TENS)
        ):
            continue
        else:
            flush()
            out.append(word)
    flush()
    return out


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes inside words and decimal points stay), numbers
    as digits: what both the scoring and the word error rate compare."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = text.replace("%", " percent ").replace("\u00b0", " degrees ")
    text = re.sub(r"[-\u2010-\u2015/]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # a period, not a decimal point
    text = re.sub(r"[^\w'.\s]|_", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    words = [_ABBREVIATIONS.get(word, word) for word in text.split()]
    return " ".join(words_to_digits(words))


# ---------------------------------------------------------------- questions and scoring


@dataclass(frozen=True)
class Question:
    question: str
    accept: tuple[tuple[str, ...], ...]  # any one list, all of whose patterns are found
    reject: tuple[str, ...] = ()  # none of these may be found
    example: str = ""  # a right reply

    def is_right(self, reply: str) -> bool:
        text = normalise(reply)
        if any(re.search(pattern, text) for pattern in self.reject):
            return False
        return any(all(re.search(p, text) for p in patterns) for patterns in self.accept)


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    data = json.loads(path.read_text())
    return [
        Question(
            question=item["question"],
            accept=tuple(tuple(patterns) for patterns in item["accept"]),
            reject=tuple(item.get("reject", ())),
            example=item.get("example", ""),
        )
        for item in data["questions"]
    ]


@dataclass(frozen=True)
class Wer:
    wer: float
    words: int  # in the references
    substitutions: int
    deletions: int
    insertions: int


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> Wer:
    """The word error rate over all pairs (errors / words of the references), after `normalise`
    on both sides; computed by jiwer."""
    refs = [normalise(text) for text in references]
    hyps = [normalise(text) for text in hypotheses]
    out = jiwer.process_words(refs, hyps)
    words = out.hits + out.substitutions + out.deletions
    return Wer(out.wer, words, out.substitutions, out.deletions, out.insertions)


# ---------------------------------------------------------------- human recordings


@dataclass(frozen=True)
class Recording:
    name: str
    path: Path
    reference: str


def read_transcription_text(text: str) -> dict[str, str]:
    """Sphinx transcription lines, `<s> words </s> (id)`, as {id: words}."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*", line)
        if match and match.group(1):
            found[match.group(2)] = match.group(1)
    return found


def human_recordings(data: Path) -> list[Recording]:
    """The recordings with transcripts under a pocketsphinx test/data folder: librivox/*.wav
    (librivox/transcription) and cards/*.wav (cards/cards.transcription)."""
    found = []
    for folder, transcription in (
        ("librivox", "librivox/transcription"),
        ("cards", "cards/cards.transcription"),
    ):
        if not (data / transcription).is_file():
            continue
        references = read_transcription_text((data / transcription).read_text())
        for name, words in sorted(references.items()):
            wav = data / folder / f"{name}.wav"
            if wav.is_file():
                found.append(Recording(f"{folder}/{name}", wav, words))
    return found


def cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "voice-fsm" / "eval"


def find_human_data(cache: Path | None = None) -> Path | None:
    """A pocketsphinx test/data folder: Debian's pocketsphinx-testdata (installed with apt-get
    when it is missing and this is root), else the files of the pocketsphinx sdist from PyPI,
    unpacked once into the cache. None (with the reason printed) when neither works."""
    if human_recordings(DEBIAN_DATA):
        return DEBIAN_DATA
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing Debian's {DEBIAN_PACKAGE} (human recordings) ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

        def apt_get(*words: str) -> int:
            command = ["apt-get", *words]
            done = subprocess.run(command, env=env, capture_output=True, check=False)
            return done.returncode

        install = ("install", "-y", "-qq", "--no-install-recommends", DEBIAN_PACKAGE)
        if apt_get(*install) != 0:  # the package lists may be missing or stale
            apt_get("update", "-qq")
            apt_get(*install)
        if human_recordings(DEBIAN_DATA):
            return DEBIAN_DATA
    target = (cache or cache_dir()) / "pocketsphinx-test-data"
    if human_recordings(target):
        return target
    print(f"fetching the human recordings from the {SDIST} sdist on PyPI ...")
    try:
        unpack_sdist_data(target)
    except (OSError, subprocess.CalledProcessError, tarfile.TarError, ValueError) as err:
        print(f"no human recordings: {err}")
        return None
    return target if human_recordings(target) else None


def unpack_sdist_data(target: Path) -> None:
    """Download the pocketsphinx sdist with pip and unpack its recordings into `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, *PIP_DOWNLOAD, "-d", tmp, SDIST], check=True)
        archives = sorted(Path(tmp).glob(f"{SDIST}-*.tar.gz"))
        if not archives:
            raise ValueError(f"pip download gave no {SDIST} sdist")
        extract_test_data(archives[0], target)


def extract_test_data(archive_path: Path, target: Path) -> None:
    """The files of test/data/librivox and test/data/cards of a pocketsphinx sdist, into
    `target`/librivox and `target`/cards (written beside it, then renamed into place)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive_path) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts  # <name>-<version>/test/data/<folder>/<file>
            wanted = len(parts) == 5 and parts[1:3] == ("test", "data")
            if wanted and parts[3] in ("librivox", "cards") and member.isfile():
                source = archive.extractfile(member)
                assert source is not None
                out = partial / parts[3] / parts[4]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(source.read())
    if not partial.is_dir():
        raise ValueError(f"{archive_path.name} has no test/data/librivox or test/data/cards")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


# ---------------------------------------------------------------- speaking the questions


def piper_speech(text: str) -> bytes:
    from voice_fsm.testing.speech import silence, spoken

    return spoken(text, varied=True) + silence(0.3)


def espeak_speech(text: str) -> bytes:
    program = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "question.wav"
        subprocess.run([program, "-w", str(wav), text], check=True)
        return load_wav(wav)


def tone_speech(text: str) -> bytes:
    """No words at all: for runs against the fake providers, which transcribe anything."""
    from voice_fsm.testing.speech import voiced

    return voiced(0.2 + 0.06 * len(text))


VOICES: dict[str, Callable[[str], bytes]] = {
    "piper": piper_speech,
    "espeak": espeak_speech,
    "tone": tone_speech,
}

# ---------------------------------------------------------------- asking


@dataclass
class Answer:
    question: str
    transcript: str
    reply: str
    right: bool
    client_voice_to_voice_ms: int | None
    server_ms: dict[str, int | None]
    error: str | None = None


@dataclass
class Heard:
    name: str
    reference: str
    transcript: str
    error: str | None = None


@dataclass
class ModelRun:
    llm_model: str  # as asked for; "default" when the server chose
    llm: dict[str, Any] = field(default_factory=dict)  # what session.created said
    answers: list[Answer] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)


async def one_turn(url: str, pcm: bytes, *, realtime: bool) -> tuple[TalkResult | None, str | None]:
    try:
        result = await talk(url, pcm, realtime=realtime, time_limit=120)
    except TalkError as err:
        return None, str(err)
    if result.error is not None:
        return result, f"{result.error.code}: {result.error.message}"
    return result, None


async def ask_all(
    url: str,
    run: ModelRun,
    questions: Sequence[Question],
    speech: Sequence[bytes],
    recordings: Sequence[Recording],
) -> None:
    warm, error = await one_turn(url, speech[0], realtime=False)  # not counted
    if warm is None:
        raise SystemExit(f"warm-up turn failed: {error}")
    run.llm = warm.session.llm.model_dump(mode="json", exclude={"type"})
    for index, (question, pcm) in enumerate(zip(questions, speech, strict=True), start=1):
        result, error = await one_turn(url, pcm, realtime=True)
        metrics = result.metrics if result is not None else None
        answer = Answer(
            question=question.question,
            transcript=result.transcript if result else "",
            reply=result.reply if result else "",
            right=error is None and result is not None and question.is_right(result.reply),
            client_voice_to_voice_ms=result.client_voice_to_voice_ms if result else None,
            server_ms={name: getattr(metrics, name) for name in STAGES} if metrics else {},
            error=error,
        )
        run.answers.append(answer)
        mark = "RIGHT" if answer.right else "wrong"
        print(f"{index:2d}. [{mark}] {question.question}")
        print(f"      heard: {answer.transcript!r}")
        print(f"      reply: {answer.reply!r}" + (f"  (error {error})" if error else ""))
        print(f"      voice-to-voice at the client: {answer.client_voice_to_voice_ms} ms")
    for recording in recordings:
        result, error = await one_turn(url, load_wav(recording.path), realtime=False)
        heard = Heard(recording.name, recording.reference, result.transcript if result else "")
        # A turn may fail after its transcript (the reply is not what is measured here).
        heard.error = error if not heard.transcript else None
        run.heard.append(heard)
        print(
            f"human {recording.name}: {heard.transcript!r}"
            + (f" (error {error})" * bool(heard.error))
        )


def summarise(run: ModelRun) -> dict[str, Any]:
    answers = run.answers
    right = sum(answer.right for answer in answers)
    synthetic = word_error_rate(
        [answer.question for answer in answers], [answer.transcript for answer in answers]
    )
    human = (
        word_error_rate([h.reference for h in run.heard], [h.transcript for h in run.heard])
        if run.heard
        else None
    )
    client = [float(a.client_voice_to_voice_ms) for a in answers if a.client_voice_to_voice_ms]
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for answer in answers:
        for name, value in answer.server_ms.items():
            if value is not None:
                stages[name].append(float(value))
    return {
        "llm_model": run.llm_model,
        "llm": run.llm,
        "questions": len(answers),
        "right": right,
        "right_pct": round(100 * right / len(answers), 1) if answers else 0.0,
        "failed_turns": sum(answer.error is not None for answer in answers),
        "wer_synthetic": asdict(synthetic),
        "wer_human": asdict(human) if human else None,
        "client_voice_to_voice_ms": {
            "p50": percentile(client, 50) if client else None,
            "p95": percentile(client, 95) if client else None,
        },
        "server_ms_p50": {n: percentile(v, 50) if v else None for n, v in stages.items()},
        "answers": [asdict(answer) for answer in answers],
        "human": [asdict(heard) for heard in run.heard],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _tool_cell(summary: dict[str, Any]) -> str:
    tools = summary.get("tool_calls")
    if tools is None:
        return "-"
    n = tools["questions"]
    return f"{tools['right_tool']}/{n} right tool, {tools['right']}/{n} right answer"


def print_table(summaries: Sequence[dict[str, Any]]) -> None:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("model (server's name)", lambda s: str(s["llm"].get("model", "?"))),
        ("right answers", lambda s: f"{s['right']}/{s['questions']} ({s['right_pct']:.0f} %)"),
        (
            "WER, synthetic questions",
            lambda s: f"{_pct(s['wer_synthetic']['wer'])} of {s['wer_synthetic']['words']} words",
        ),
        (
            "WER, human recordings",
            lambda s: (
                "-"
                if s["wer_human"] is None
                else f"{_pct(s['wer_human']['wer'])} of {s['wer_human']['words']} words"
            ),
        ),
        ("tool calls (in process)", _tool_cell),
        ("voice-to-voice p50 (client)", lambda s: _ms(s["client_voice_to_voice_ms"]["p50"])),
        ("voice-to-voice p95 (client)", lambda s: _ms(s["client_voice_to_voice_ms"]["p95"])),
    ]
    rows += [
        (f"  server {name} p50", lambda s, name=name: _ms(s["server_ms_p50"][name]))
        for name in STAGES
    ]
    width = max(len(label) for label, _ in rows)
    columns = [[cell(s) for _, cell in rows] for s in summaries]
    heads = [s["llm_model"] for s in summaries]
    col = max(24, *(len(h) for h in heads), *(len(c) for column in columns for c in column))
    print()
    print(" " * width + "  " + "  ".join(h.ljust(col) for h in heads))
    for index, (label, _) in enumerate(rows):
        print(label.ljust(width) + "  " + "  ".join(c[index].ljust(col) for c in columns))


# ---------------------------------------------------------------- tool calls


@dataclass(frozen=True)
class ToolQuestion:
    question: Question
    tool: str | None  # the tool a right reply calls first; None: no tool


def clock_values(now: datetime.datetime) -> dict[str, str]:
    """What {weekday}, {day}, ... in tool_questions.json stand for at `now`."""
    return {
        "weekday": now.strftime("%A").lower(),
        "day": str(now.day),
        "month": str(now.month),
        "month_name": now.strftime("%B").lower(),
        "year": str(now.year),
        "hour24": str(now.hour),
        "hour12": str(now.hour % 12 or 12),
    }


def llm_is_local(settings: list[str]) -> bool:
    """Whether the server's language model is the embedded one, which the tool-call run asks
    in process (a --set of another provider, such as the fakes, has nothing to ask)."""
    chosen = dict(item.split("=", 1) for item in settings if "=" in item)
    provider = chosen.get("VOICE_FSM_LLM__PROVIDER", "auto")
    if provider not in ("auto", "local"):
        print(f"tool calls: skipped (the language model is {provider}, not the embedded one)")
        return False
    return True


def load_tool_questions(path: Path, now: datetime.datetime) -> list[ToolQuestion]:
    values = clock_values(now)

    def fill(pattern: str) -> str:
        for name, value in values.items():
            pattern = pattern.replace("{" + name + "}", value)
        return pattern

    return [
        ToolQuestion(
            Question(
                question=item["question"],
                accept=tuple(tuple(fill(p) for p in patterns) for patterns in item["accept"]),
                reject=tuple(fill(p) for p in item.get("reject", ())),
            ),
            item["tool"],
        )
        for item in json.loads(path.read_text())["questions"]
    ]


async def ask_with_tools(llm: Any, toolbox: Any, question: str) -> tuple[list[str], str]:
    """Ask `question` with the toolbox's tools as a session would (up to 3 rounds): the tools
    called and the final reply."""
    from voice_fsm.adapters.base import ChatMessage, ToolCall
    from voice_fsm.settings import DEFAULT_INSTRUCTIONS

    messages = [ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", question)]
    called: list[str] = []
    for _ in range(3):
        text, calls = "", []
        async for event in llm.reply(messages, tools=toolbox.specs()):
            if isinstance(event, ToolCall):
                calls.append(event)
            else:
                text += event
        if not calls:
            return called, text
        called += [call.name for call in calls]
        messages.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
        for call in calls:
            result = await toolbox.run(call, timeout_s=10, max_result_chars=4000)
            messages.append(ChatMessage("tool", result.content, tool_call_id=call.call_id))
    return called, ""


async def tool_calls_run(
    llm_model: str | None, questions: Sequence[ToolQuestion]
) -> dict[str, Any]:
    from voice_fsm.adapters.local.llm import LlamaLanguageModel
    from voice_fsm.settings import LocalSettings
    from voice_fsm.tool_settings import ToolSettings
    from voice_fsm.tools.toolbox import build_toolbox

    settings = LocalSettings(llm_model=llm_model) if llm_model else LocalSettings()
    llm = LlamaLanguageModel(settings)
    toolbox = build_toolbox(ToolSettings(builtins="on"), local_llm=True)
    answers: list[dict[str, Any]] = []
    try:
        await toolbox.start()
        for index, item in enumerate(questions, start=1):
            called, reply = await ask_with_tools(llm, toolbox, item.question.question)
            right_tool = (called[:1] == [item.tool]) if item.tool else not called
            right = right_tool and item.question.is_right(reply)
            answers.append(
                {
                    "question": item.question.question,
                    "expected_tool": item.tool,
                    "called": called,
                    "reply": reply,
                    "right_tool": right_tool,
                    "right": right,
                }
            )
            print(f"{index:2d}. [{'RIGHT' if right else 'wrong'}] {item.question.question}")
            print(f"      tools: {called or 'none'} (expected {item.tool or 'none'})")
            print(f"      reply: {reply!r}")
    finally:
        await toolbox.aclose()
        await llm.aclose()
    total = len(answers)
    tools_right = sum(a["right_tool"] for a in answers)
    answers_right = sum(a["right"] for a in answers)
    print(
        f"tool calls ({llm.model}): {tools_right}/{total} right tool, "
        f"{answers_right}/{total} right answer"
    )
    return {
        "model": llm.model,
        "questions": total,
        "right_tool": tools_right,
        "right": answers_right,
        "answers": answers,
    }


# ---------------------------------------------------------------- main


def server_env(llm_model: str | None, extra: Sequence[str]) -> dict[str, str]:
    """No key (so every stage is local), JSON logs, the model asked for, and `--set`s."""
    env = base_env(VOICE_FSM_LOG__FORMAT="json")
    if llm_model:
        env["VOICE_FSM_LOCAL__LLM_MODEL"] = llm_model
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants NAME=VALUE, not {item!r}")
        env[name] = value
    return env


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llm-model",
        action="append",
        default=[],
        help="VOICE_FSM_LOCAL__LLM_MODEL for a server (qwen2.5-coder-0.5b, smollm2-135m or a "
        "GGUF path); repeat it to compare models in one run. Unset: the server's default.",
    )
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--voice", choices=sorted(VOICES), default="piper")
    parser.add_argument(
        "--human-data",
        default="auto",
        help="a pocketsphinx test/data folder, 'none' to skip the human recordings, or auto "
        "(Debian's pocketsphinx-testdata, installed as root, else the PyPI sdist's)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="server environment"
    )
    parser.add_argument("--tool-questions", type=Path, default=TOOL_QUESTIONS)
    tool_mode = parser.add_mutually_exclusive_group()
    tool_mode.add_argument("--no-tools", action="store_true", help="skip the tool calls")
    tool_mode.add_argument(
        "--only-tools", action="store_true", help="only the tool calls (no server, no speech)"
    )
    parser.add_argument("--json", type=Path, default=Path("artifacts/eval-local.json"))
    args = parser.parse_args(argv)
    if args.only_tools:
        tool_questions = load_tool_questions(args.tool_questions, datetime.datetime.now())
        report: dict[str, Any] = {
            "tool_questions_file": str(args.tool_questions),
            "tool_calls": [
                asyncio.run(tool_calls_run(model, tool_questions))
                for model in args.llm_model or [None]
            ],
            "machine": machine(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
        return

    questions = load_questions(args.questions)
    if args.limit:
        questions = questions[: args.limit]
    if args.human_data == "none":
        recordings: list[Recording] = []
    else:
        data = find_human_data() if args.human_data == "auto" else Path(args.human_data)
        recordings = human_recordings(data) if data else []
        print(f"human recordings: {len(recordings)} from {data}")
    speak = VOICES[args.voice]
    speech = [speak(question.question) for question in questions]
    print(f"{len(questions)} questions spoken by {args.voice}")

    summaries = []
    for llm_model in args.llm_model or [None]:
        run = ModelRun(llm_model or "default")
        print(f"\n=== language model: {run.llm_model}")
        port = free_port()
        with tempfile.TemporaryDirectory() as workdir:
            env = server_env(llm_model, args.set)
            server, _ = start_server(port, Path(workdir), env, timeout=600)
            try:
                url = f"ws://127.0.0.1:{port}/ws"
                asyncio.run(ask_all(url, run, questions, speech, recordings))
            finally:
                stop_server(server)
        summary = summarise(run)
        if not args.no_tools and llm_is_local(args.set):
            now = datetime.datetime.now()
            tool_questions = load_tool_questions(args.tool_questions, now)
            summary["tool_calls"] = asyncio.run(tool_calls_run(llm_model, tool_questions))
        summaries.append(summary)

    print_table(summaries)
    print("\n(latencies on a shared machine are noisy: compare models from the same run)")
    report = {
        "questions_file": str(args.questions),
        "voice": args.voice,
        "human_recordings": len(recordings),
        "models": summaries,
        "machine": machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
