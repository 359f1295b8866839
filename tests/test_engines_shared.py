"""Two `voice-fsm serve` processes sharing one `voice-fsm engines` process, all real
subprocesses as a user would start them: a spoken question asked of each server at the same
time gets a spoken answer from each, through the engines' one set of models, and the engines'
metrics show the requests that waited for an engine busy with the other server's.

The servers' live transcription (VOICE_FSM_STT__LIVE=auto) asks the engines for a Realtime
transcription endpoint at the first turn; the engines have none, so the servers send each
completed recording instead, and that first turn still succeeds.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.talk import TalkResult, talk

from support.engines import Running, running_engines, running_serve, samples
from support.local import require_local_engines

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
ENGINES = ("stt", "llm", "tts")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@dataclass
class Shared:
    engines: Running
    loading_statuses: list[int]
    servers: tuple[Running, Running]
    turns: list[TalkResult]
    metrics: str


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    require_local_engines()
    from voice_fsm.testing.speech import spoken

    workdir = tmp_path_factory.mktemp("engines-shared")
    question = spoken(QUESTION, total_s=2.0)
    with (
        running_engines(workdir) as (engines, statuses),
        running_serve(workdir, engines.url, "serve-a") as first,
        running_serve(workdir, engines.url, "serve-b") as second,
    ):

        async def ask_both() -> list[TalkResult]:
            return list(
                await asyncio.gather(
                    *(
                        talk(f"ws://127.0.0.1:{server.port}/ws", question, time_limit=90)
                        for server in (first, second)
                    )
                )
            )

        turns = asyncio.run(ask_both())
        metrics = httpx.get(f"{engines.url}/metrics", timeout=5).text
        yield Shared(engines, statuses, (first, second), turns, metrics)


def test_each_server_answers_a_spoken_question_through_the_engines(shared: Shared) -> None:
    for turn in shared.turns:
        assert turn.ok, turn.error
        created = turn.session
        assert (created.stt.provider, created.llm.provider, created.tts.provider) == ("openai",) * 3
        assert {"capital", "france"} <= words(turn.transcript)
        assert turn.reply.strip()
        assert len(turn.audio) / 2 / SAMPLE_RATE >= 0.5  # seconds of spoken answer


def test_the_engines_metrics_count_every_request_and_the_queue_wait(shared: Shared) -> None:
    counts = samples(shared.metrics, "voice_fsm_engine_queue_wait_seconds_count")
    waited = samples(shared.metrics, "voice_fsm_engine_queue_wait_seconds_sum")
    for engine in ENGINES:
        assert counts[engine] >= 2, (engine, counts)  # one request of each server at least
    # Asked at the same moment, one server's request waited for the other's.
    assert sum(waited.values()) > 0, waited
    ok = samples(shared.metrics, "voice_fsm_engine_requests_total", outcome="ok")
    assert ok == counts, (ok, counts)  # every request waited for its engine once, and succeeded


def test_the_engines_were_not_ready_until_their_models_loaded(shared: Shared) -> None:
    assert shared.loading_statuses[0] == 503
    assert shared.loading_statuses[-1] == 200


def test_the_servers_fell_back_from_live_transcription_once(shared: Shared) -> None:
    for server in shared.servers:
        log = server.log_text()
        assert log.count("has no Realtime transcription endpoint") >= 1, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(shared: Shared) -> None:
    process = shared.engines.process
    client = openai.OpenAI(base_url=f"{shared.engines.url}/v1", api_key="unused", max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Tell me a story about a dragon."}],
            stream=True,
        )
        process.send_signal(signal.SIGTERM)
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert process.wait(30) == 0
    log = shared.engines.log_text()
    assert '"engines.stopped"' in log
    assert "Traceback" not in log, log[-3000:]
