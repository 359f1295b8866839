"""A turn's record lists the provider's id of a request that failed, not only of those that
answered: the id is what an operator quotes to the provider's support."""

from __future__ import annotations

import pytest
import respx
from structlog.testing import capture_logs

from voice_fsm import provider_requests
from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import InputAudioStart, InputAudioStop
from voice_fsm.turn_record import TurnRecord

from conftest import ClientFactory
from session_harness import fake_pipeline
from support.openai_wire import BASE_URL, KEY, drain, error_response, openai_settings

START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")

FAILED_ID = "req_7f3a9c2e41d84b0c"


def _llm() -> OpenAILanguageModel:
    settings = openai_settings("llm")
    return OpenAILanguageModel(
        settings.llm, make_openai_client(settings, settings.llm), settings.secrets()
    )


@respx.mock(base_url=BASE_URL, assert_all_called=True)
async def test_the_adapter_notes_the_id_of_a_request_that_failed(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/chat/completions").mock(
        return_value=error_response(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key",
            **{"x-request-id": FAILED_ID},
        )
    )  # fmt: skip
    llm = _llm()
    requests = provider_requests.collect()
    with pytest.raises(ProviderError) as caught:
        await drain(llm.reply([ChatMessage("user", "Hi")]), [])
    await llm.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_AUTH
    assert requests == [{"stage": "llm", "id": FAILED_ID}]


def test_an_id_is_noted_once() -> None:
    requests = provider_requests.collect()
    provider_requests.note(Stage.LLM, "req_1")
    provider_requests.note(Stage.LLM, "req_1")  # the response's header, then its error
    provider_requests.note(Stage.LLM, None)
    provider_requests.note(Stage.TTS, "req_1")
    assert requests == [{"stage": "llm", "id": "req_1"}, {"stage": "tts", "id": "req_1"}]


@respx.mock(base_url=BASE_URL, assert_all_called=True)
async def test_the_failing_turns_log_line_and_record_carry_the_id(
    respx_mock: respx.MockRouter, connect: ClientFactory
) -> None:
    respx_mock.post("/chat/completions").mock(
        return_value=error_response(
            500, "The server had an error.", "server_error", None,
            **{"x-request-id": FAILED_ID},
        )
    )  # fmt: skip
    records: list[TurnRecord] = []

    class Recorder:
        def turn_ended(self, record: TurnRecord) -> None:
            records.append(record)

    llm = _llm()
    with capture_logs() as logs:
        client = await connect(fake_pipeline(llm=llm), observers=[Recorder()])
        await client.send(START)
        await client.speak()
        await client.send(STOP)
        await client.until("error")
        await client.until("state", state="idle")
    await llm.aclose()
    (line,) = [entry for entry in logs if entry["event"] == "turn.completed"]
    assert line["outcome"] == "error"
    assert line["code"] == "provider-unavailable"
    assert line["provider_requests"] == [{"stage": "llm", "id": FAILED_ID}]
    assert records[0].provider_requests == [{"stage": "llm", "id": FAILED_ID}]
    assert KEY not in str(line)
