"""`make eval-local`'s pieces: normalising text, judging replies, the word error rate, reading the
human recordings; and the harness end to end against a real server on the fake providers."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import wave
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from support.servers import QUICK_FAKES, clean_env, write_question

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_eval() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # eval_local imports the benches' common module
    try:
        import eval_local
    finally:
        sys.path.remove(str(BENCH))
    return eval_local


ev = load_eval()


# ---------------------------------------------------------------- normalising


SPELLINGS = [  # (text, normalised)
    ("Seventeen times three is fifty-one.", "17 times 3 is 51"),
    ("What is 17 times 3?", "what is 17 times 3"),
    ("A leap year has three hundred and sixty-six days.", "a leap year has 366 days"),
    ("three hundred sixty six", "366"),
    ("a hundred and two", "102"),
    ("two thousand and twenty six", "2026"),
    ("1,000 people", "1000 people"),
    ("It is 98.6 degrees.", "it is 98.6 degrees"),
    ("Mr. Dashwood\u2019s house, isn't it?", "mister dashwood's house isn't it"),
    ("ill-disposed", "ill disposed"),
    ("'Quoted' words", "quoted words"),
]


def test_normalise_compares_words_not_spelling() -> None:
    # One test for the table (each test's teardown collects garbage, a second on a busy box).
    assert [ev.normalise(text) for text, _ in SPELLINGS] == [expected for _, expected in SPELLINGS]


def test_numbers_said_one_after_the_other_stay_apart() -> None:
    assert ev.normalise("five five") == "5 5"
    assert ev.normalise("ten of clubs") == "10 of clubs"
    assert ev.normalise("twenty twelve") == "20 12"
    assert ev.normalise("twenty one two") == "21 2"
    assert ev.normalise("one hundred hundred") == "100 hundred"


# ---------------------------------------------------------------- the question set


def test_the_question_set_is_ordinary_questions_each_with_a_right_example() -> None:
    questions = ev.load_questions()
    assert len(questions) >= 20
    assert len({q.question for q in questions}) == len(questions)
    for question in questions:
        assert question.accept, question.question
        assert question.example, question.question
        assert question.is_right(question.example), (question.question, question.example)


def question(text: str) -> Any:
    return next(q for q in ev.load_questions() if q.question == text)


JUDGED = [  # (question, reply, right)
    # What the issue saw SmolLM2 answer: wrong.
    ("How many days are in a leap year?", "The answer is 13.", False),
    ("What is seventeen times three?", "17 * 18 = 257", False),
    ("What is seventeen times three?", "17 times 3 is 54, so 51 minus 3.", False),
    ("What is the largest planet in our solar system?", "Neptune, or maybe Saturn.", False),
    ("At what temperature does water boil at sea level?", "212 degrees Celsius.", False),
    ("What are the three primary colors of paint?", "Red, blue and green.", False),
    ("What is the capital of France?", "The capital of France is Lyon.", False),
    ("What is the capital of France?", "", False),
    # Lenient to phrasing.
    ("What is the capital of France?", "PARIS!", True),
    ("How many days are in a leap year?", "There are 366 days in a leap year.", True),
    ("How many days are in a leap year?", "Three hundred sixty-six.", True),
    ("What is seventeen times three?", "That's 51.", True),
    ("At what temperature does water boil at sea level?", "At 212 °Fahrenheit.", True),
    ("At what temperature does water boil at sea level?", "100 °C, or 212 °F.", True),
    ("What are the three primary colors of paint?", "Blue, yellow and red.", True),
    ("What is the chemical symbol for gold?", "It's A.U.", True),
    ("What gas do plants take in from the air?", "CO2.", True),
]


def test_replies_are_judged_on_the_fact() -> None:
    judged = [(asked, reply, question(asked).is_right(reply)) for asked, reply, _ in JUDGED]
    assert judged == JUDGED


def test_an_answer_to_another_question_is_not_right() -> None:
    questions = {q.question: q for q in ev.load_questions()}
    capital = questions["What is the capital of France?"]
    assert not capital.is_right(questions["What is the capital of Japan?"].example)
    legs = questions["How many legs does a spider have?"]
    assert not legs.is_right(questions["How many continents are there?"].example)


# ---------------------------------------------------------------- word error rate


def test_the_word_error_rate_ignores_case_punctuation_and_how_numbers_are_written() -> None:
    wer = ev.word_error_rate(
        ["What is seventeen times three?", "he was not an ill disposed young man"],
        ["what is 17 times 3", "He was not an ill-disposed young man."],
    )
    assert (wer.wer, wer.words) == (0.0, 13)


def test_the_word_error_rate_counts_errors_over_all_reference_words() -> None:
    wer = ev.word_error_rate(
        ["ten of clubs", "seven of hearts"], ["10 of clubs and", "seven of parts"]
    )
    # One inserted word and one substituted, over six words of the references.
    assert (wer.words, wer.insertions, wer.substitutions, wer.deletions) == (6, 1, 1, 0)
    assert wer.wer == pytest.approx(2 / 6)
    assert ev.word_error_rate(["four queen of clubs"], [""]).wer == 1.0


# ---------------------------------------------------------------- human recordings


def test_sphinx_transcriptions_are_read_by_id() -> None:
    found = ev.read_transcription_text(
        "<s> ten of clubs  </s> (001)\n"
        "<s> he was not an ill disposed young man </s> (sense_0880)\n"
        "\n"
        "garbage line\n"
    )
    assert found == {"001": "ten of clubs", "sense_0880": "he was not an ill disposed young man"}


def make_sdist(path: Path) -> None:
    """A tarball laid out as the pocketsphinx sdist: two recordings and other test files."""
    files = {
        "pocketsphinx-9.9/test/data/librivox/transcription": b"<s> hello there </s> (a)\n",
        "pocketsphinx-9.9/test/data/librivox/a.wav": b"RIFF",
        "pocketsphinx-9.9/test/data/cards/cards.transcription": b"<s> five five </s> (004)\n",
        "pocketsphinx-9.9/test/data/cards/004.wav": b"RIFF",
        "pocketsphinx-9.9/test/data/goforward.raw": b"\0\0",
        "pocketsphinx-9.9/src/main.c": b"int main;",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_the_sdist_gives_the_recordings_with_their_transcripts(tmp_path: Path) -> None:
    make_sdist(tmp_path / "pocketsphinx-9.9.tar.gz")
    target = tmp_path / "cache" / "data"
    target.parent.mkdir()
    ev.extract_test_data(tmp_path / "pocketsphinx-9.9.tar.gz", target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "cards",
        "cards/004.wav",
        "cards/cards.transcription",
        "librivox",
        "librivox/a.wav",
        "librivox/transcription",
    ]
    found = ev.human_recordings(target)
    assert [(r.name, r.reference) for r in found] == [
        ("librivox/a", "hello there"),
        ("cards/004", "five five"),
    ]


# ---------------------------------------------------------------- end to end


@pytest.mark.integration
def test_the_harness_asks_through_a_real_server_and_scores_it(tmp_path: Path) -> None:
    """Two questions and one recording through `voice-fsm serve` on the fake providers, which
    hear every question as "What is the capital of France?" and answer "The capital of France
    is Paris.": one answer right of two, and word error rates from those transcripts."""
    questions = tmp_path / "questions.json"
    questions.write_text(
        json.dumps(
            {
                "questions": [
                    {"question": "What is the capital of France?", "accept": [["paris"]]},
                    {"question": "How many legs does a spider have?", "accept": [["\\b8\\b"]]},
                ]
            }
        )
    )
    data = tmp_path / "data"
    (data / "cards").mkdir(parents=True)
    (data / "cards" / "cards.transcription").write_text(
        "<s> what is the capital of spain </s> (001)\n"
    )
    write_question(data / "cards" / "001.wav", 0.5)  # 16 kHz, as the real recordings are
    with wave.open(str(data / "cards" / "001.wav")) as wav:
        assert wav.getframerate() == 16_000
    fakes = {f"VOICE_FSM_{stage}__PROVIDER": "fake" for stage in ("STT", "LLM", "TTS")}
    settings = [f"--set={name}={value}" for name, value in {**fakes, **QUICK_FAKES}.items()]
    out = tmp_path / "eval.json"
    args = ["--questions", str(questions), "--voice", "tone", "--human-data", str(data)]
    args += ["--json", str(out), *settings, "--llm-model", "first", "--llm-model", "second"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "eval_local.py"), *args],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[RIGHT] What is the capital of France?" in done.stdout
    assert "[wrong] How many legs does a spider have?" in done.stdout
    report = json.loads(out.read_text())
    assert [m["llm_model"] for m in report["models"]] == ["first", "second"]  # one server each
    for model in report["models"]:
        assert (model["right"], model["questions"], model["right_pct"]) == (1, 2, 50.0)
        assert [a["right"] for a in model["answers"]] == [True, False]
        # 0 errors in 6 words, then "how many legs does a spider have" heard as the 6 words
        # of the first: 6 substitutions and 1 deletion.
        assert model["wer_synthetic"]["wer"] == pytest.approx(7 / 13)
        assert model["wer_human"]["wer"] == pytest.approx(1 / 6)  # spain -> france
        assert model["human"][0]["transcript"] == "What is the capital of France?"
        assert model["client_voice_to_voice_ms"]["p50"] > 0
        assert model["server_ms_p50"]["voice_to_voice_ms"] > 0
    assert "right answers" in done.stdout
    assert "WER, human recordings" in done.stdout
