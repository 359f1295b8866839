"""`voice-fsm engines`' app with the real embedded models, on a real uvicorn, driven by the
openai SDK (and by the OpenAI adapters `serve` uses): what a client of OpenAI's API gets, from
a server that loaded Whisper, SmolLM2 and Piper once for this module.

SmolLM2-135M calls no tool when offered one, so the tool-call stream is shown with a scripted
language model in the engine's place: the wire format is the app's, whichever model writes.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from io import BytesIO
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from voice_fsm.adapters.base import (
    PCM_SAMPLE_RATE,
    ChatMessage,
    ReplyEvent,
    ToolCall,
    ToolSpec,
    TranscriptDone,
)
from voice_fsm.adapters.local.runtime import InferenceLane, StopFlag
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.adapters.openai.stt import OpenAISpeechToText
from voice_fsm.adapters.openai.tts import OpenAITextToSpeech
from voice_fsm.audio import pcm_to_wav
from voice_fsm.engines.app import create_engines_app
from voice_fsm.engines.loading import Engines, ServedModel, load_engines
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import (
    DEFAULT_INSTRUCTIONS,
    AuthSettings,
    LlmSettings,
    LocalSettings,
    LogSettings,
    Settings,
    SttSettings,
    ToolSettings,
    TtsSettings,
)

from support.engines import samples
from support.in_process import serving_app
from support.local import require_local_engines

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
STT, LLM, TTS = "whisper-base", "SmolLM2-135M-Instruct.Q4_1", "piper-en_US-joe-medium"
KEY = "engines-test-key-0123456789"


def quick_settings(**overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings' own argument
        local=LocalSettings(llm_model="smollm2-135m"),
        tools=ToolSettings(builtins="off"),
        log=LogSettings(format="json"),
        **overrides,
    )


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    require_local_engines()
    loaded = load_engines(quick_settings())
    yield loaded
    asyncio.run(loaded.aclose())


@pytest.fixture(scope="module")
def question_wav() -> bytes:
    from voice_fsm.testing.speech import spoken

    return pcm_to_wav(spoken(QUESTION, total_s=2.0), PCM_SAMPLE_RATE)


@asynccontextmanager
async def served(
    engines: Engines, settings: Settings | None = None, *, key: str = "unused", **options: Any
) -> AsyncIterator[tuple[AsyncOpenAI, str]]:
    """The app on a free port: an SDK client (no retries) and the base URL."""
    app = create_engines_app(settings or quick_settings(), engines, **options)
    async with serving_app(app) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
            yield client, base_url


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


async def metrics(base_url: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(base_url.removesuffix("/v1") + "/metrics")).text


async def until_metric(base_url: str, name: str, value: float, **labels: str) -> None:
    """Wait until the language model's sample `name` (with `labels`) is `value`."""
    async with asyncio.timeout(10):
        while samples(await metrics(base_url), name, **labels).get("llm") != value:  # noqa: ASYNC110 (the server's figures)
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------ models


async def test_models_lists_each_engine_and_knows_the_settings_names(engines: Engines) -> None:
    async with served(engines) as (client, _):
        listed = [model.id async for model in client.models.list()]
        assert listed == [STT, LLM, TTS]
        # The names `serve` asks for with the same settings (VOICE_FSM_LOCAL__LLM_MODEL).
        assert (await client.models.retrieve("smollm2-135m")).id == LLM
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-9")


# ------------------------------------------------------------------------ speech-to-text


async def test_speech_is_transcribed_as_json_text_and_a_stream(
    engines: Engines, question_wav: bytes
) -> None:
    file = ("question.wav", question_wav, "audio/wav")
    async with served(engines) as (client, _):
        whole = await client.audio.transcriptions.create(model=STT, file=file)
        text = await client.audio.transcriptions.create(
            model=STT, file=file, response_format="text"
        )
        stream = await client.audio.transcriptions.create(model=STT, file=file, stream=True)
        events = [event async for event in stream]

    assert {"capital", "france"} <= words(whole.text)
    assert text.strip() == whole.text
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == whole.text
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas.strip() == done.text


async def test_serves_speech_to_text_adapter_gets_the_transcript(engines: Engines) -> None:
    from voice_fsm.testing.speech import spoken

    async with served(engines) as (client, _):
        stt = OpenAISpeechToText(SttSettings(provider="openai", model=STT), client)
        events = [e async for e in stt.transcribe(spoken(QUESTION, total_s=2.0))]
    assert isinstance(events[-1], TranscriptDone)
    assert {"capital", "france"} <= words(events[-1].text)


# ------------------------------------------------------------------------ chat


async def test_chat_streams_role_text_finish_usage_and_done(engines: Engines) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with served(engines) as (client, base_url):
        stream = await client.chat.completions.create(
            model=LLM, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(model=LLM, messages=messages)
        async with httpx.AsyncClient() as http:
            raw = await http.post(
                f"{base_url}/chat/completions",
                json={"model": LLM, "messages": messages, "stream": True},
            )

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishing[-1] == "stop"
    assert set(finishing[:-1]) == {None}
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens > 0
    assert {c.id for c in chunks} == {chunks[0].id}
    assert whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")


class ScriptedModel:
    """A language model that says `script`, then fails if `fail` (for the stream's shape
    with tool calls and errors); records the messages it was given."""

    provider = "scripted"
    model = "scripted"

    def __init__(self, script: Sequence[ReplyEvent], fail: bool = False) -> None:
        self.script = script
        self.fail = fail
        self.seen: list[list[ChatMessage]] = []

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[ReplyEvent, None]:
        self.seen.append(list(messages))
        for event in self.script:
            yield event
        if self.fail:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "the model broke", stage=Stage.LLM)

    async def aclose(self) -> None:
        pass


CLOCK = ToolSpec("clock", "Get the current time.", {"type": "object", "properties": {}})
CALCULATOR = ToolSpec(
    "calculator",
    "Evaluate an arithmetic expression.",
    {"type": "object", "properties": {"expression": {"type": "string"}}},
)
CALLS = (
    ToolCall("call_clock1", "clock", "{}"),
    ToolCall("call_calc2", "calculator", '{"expression": "17 * 23"}'),
)


async def test_tool_calls_stream_as_openai_streams_them(engines: Engines) -> None:
    model = ScriptedModel(["Let me check. ", *CALLS])
    tools: Any = [{"type": "function", "function": asdict(spec)} for spec in (CLOCK, CALCULATOR)]
    messages: Any = [{"role": "user", "content": "What time is it, and what is 17 times 23?"}]
    async with served(replace(engines, llm=model)) as (client, _):
        stream = await client.chat.completions.create(
            model=LLM, messages=messages, tools=tools, stream=True
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(model=LLM, messages=messages, tools=tools)
        # serve's own adapter, as it reads a reply with calls
        llm = OpenAILanguageModel(LlmSettings(provider="openai", model=LLM), client)
        events = [e async for e in llm.reply([ChatMessage("user", "?")], tools=[CLOCK])]

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            assert piece.function is not None
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
    assert [(c["id"], c["name"], c["arguments"]) for c in calls.values()] == [
        (call.call_id, call.name, call.arguments) for call in CALLS
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    message = whole.choices[0].message
    assert message.content == "Let me check. "
    assert [(c.id, c.function.name) for c in message.tool_calls or () if c.type == "function"] == [
        (c.call_id, c.name) for c in CALLS
    ]
    assert whole.choices[0].finish_reason == "tool_calls"
    assert events == ["Let me check. ", *CALLS]


@pytest.fixture(scope="module")
def with_qwen(engines: Engines) -> Iterator[Engines]:
    """The engines with the default language model, Qwen2.5-Coder-0.5B, which calls tools
    (SmolLM2 does not); it loads in a fraction of a second (memory-mapped)."""
    from voice_fsm.adapters.local.llm import LlamaLanguageModel
    from voice_fsm.adapters.local.packages import LocalModelMissing

    try:
        qwen = LlamaLanguageModel(LocalSettings())
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))
    served = ServedModel("llm", qwen.model, frozenset())
    yield replace(engines, llm=qwen, models=(engines.models[0], served, engines.models[2]))
    asyncio.run(qwen.aclose())


async def test_the_real_model_calls_a_tool_through_the_engines(with_qwen: Engines) -> None:
    model = with_qwen.models[1].id
    question = [
        ChatMessage("system", DEFAULT_INSTRUCTIONS),
        ChatMessage("user", "What time is it?"),
    ]
    async with served(with_qwen) as (client, _):
        llm = OpenAILanguageModel(LlmSettings(provider="openai", model=model), client)
        events = [e async for e in llm.reply(question, tools=[CLOCK, CALCULATOR])]
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert [c.name for c in calls] == ["clock"], events
        result = ChatMessage("tool", '{"time": "14:05"}', tool_call_id=calls[0].call_id)
        answer = ChatMessage("assistant", "", tool_calls=tuple(calls))
        reply = [e async for e in llm.reply([*question, answer, result], tools=[CLOCK])]
    text = "".join(e for e in reply if isinstance(e, str))
    assert "14:05" in text or "2:05" in text or "five past two" in text.lower(), text


async def test_tool_results_reach_the_model_as_the_adapters_messages(engines: Engines) -> None:
    model = ScriptedModel(["It is noon."])
    calls: Any = [
        {"id": "call_clock1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
    ]
    messages: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What time is it?"}]},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_clock1", "content": '{"time": "12:00"}'},
    ]
    async with served(replace(engines, llm=model)) as (client, _):
        whole = await client.chat.completions.create(model=LLM, messages=messages)

    assert whole.choices[0].message.content == "It is noon."
    assert model.seen == [
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "What time is it?"),
            ChatMessage("assistant", "", tool_calls=(CALLS[0],)),
            ChatMessage("tool", '{"time": "12:00"}', tool_call_id="call_clock1"),
        ]
    ]


async def test_a_failure_mid_stream_ends_it_with_the_apis_error_event(engines: Engines) -> None:
    model = ScriptedModel(["Paris is", " the capital"], fail=True)
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with served(replace(engines, llm=model)) as (client, base_url):
        stream = await client.chat.completions.create(model=LLM, messages=messages, stream=True)
        got: list[str] = []

        async def read_all() -> None:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIError, match="the model broke"):
            await read_all()
        exposition = await metrics(base_url)
    assert "".join(got) == "Paris is the capital"
    assert samples(exposition, "voice_fsm_engine_requests_total", outcome="error")["llm"] == 1


# ------------------------------------------------------------------------ text-to-speech


async def test_speech_streams_pcm_and_wav(engines: Engines) -> None:
    text = "Hello there. The capital of France is Paris."
    async with served(engines) as (client, _):
        async with client.audio.speech.with_streaming_response.create(
            model=TTS, voice="alloy", input=text, response_format="pcm"
        ) as response:
            content_type = response.headers["content-type"]
            pcm = b"".join([chunk async for chunk in response.iter_bytes()])
        wav = await client.audio.speech.create(
            model=TTS, voice="alloy", input=text, response_format="wav"
        )
        silent = await client.audio.speech.create(
            model=TTS, voice="alloy", input="  ", response_format="pcm"
        )
        # serve's own adapter asks for pcm with its settings' voice, speed and model
        tts = OpenAITextToSpeech(TtsSettings(provider="openai", model=TTS), client)
        spoken = b"".join([chunk async for chunk in tts.synthesize(text)])

    assert silent.content == b""  # nothing to say: no audio, no error
    assert content_type == "audio/pcm"
    assert len(pcm) % 2 == 0
    assert len(pcm) / 2 / PCM_SAMPLE_RATE > 1.5  # seconds for two sentences
    with wave.open(BytesIO(wav.content)) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
            PCM_SAMPLE_RATE,
            1,
            2,
        )
        frames = reader.readframes(len(pcm))
    # Piper draws random noise for each reading: the same text, about the same length.
    for audio in (frames, spoken):
        assert len(audio) % 2 == 0
        assert 0.8 < len(audio) / len(pcm) < 1.25


# ------------------------------------------------------------------------ bad input


async def test_bad_input_gets_typed_errors_and_the_next_request_works(
    engines: Engines, question_wav: bytes
) -> None:
    chat: Any = [{"role": "user", "content": QUESTION}]
    async with served(engines) as (client, base_url), httpx.AsyncClient() as http:

        async def refused(error: type[openai.APIStatusError], call: Any) -> dict[str, Any]:
            with pytest.raises(error) as caught:
                await call
            body = caught.value.body
            assert isinstance(body, dict)
            return body

        body = await refused(
            openai.NotFoundError, client.chat.completions.create(model="gpt-9", messages=chat)
        )
        assert (body["code"], body["param"]) == ("model_not_found", "model")
        body = await refused(
            openai.BadRequestError, client.chat.completions.create(model=LLM, messages=[])
        )
        assert body["param"] == "messages"
        bad_role: Any = [{"role": "robot", "content": "hi"}]
        body = await refused(
            openai.BadRequestError, client.chat.completions.create(model=LLM, messages=bad_role)
        )
        assert body["param"] == "messages[0].role"
        body = await refused(
            openai.BadRequestError,
            client.audio.transcriptions.create(
                model=STT, file=("notes.txt", b"not audio at all" * 50, "text/plain")
            ),
        )
        assert body["param"] == "file"
        body = await refused(
            openai.BadRequestError,
            client.audio.speech.create(
                model=TTS, voice="alloy", input="Hi.", response_format="mp3"
            ),
        )
        assert (body["code"], body["param"]) == ("unsupported_value", "response_format")
        body = await refused(
            openai.BadRequestError,
            client.audio.speech.create(model=TTS, voice="alloy", input="x" * 4097),
        )
        assert body["param"] == "input"

        not_json = await http.post(
            f"{base_url}/chat/completions",
            content=b'{"model": ',
            headers={"content-type": "application/json"},
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"] == "invalid_json"
        no_model = await http.post(f"{base_url}/chat/completions", json={"messages": chat})
        assert no_model.status_code == 400
        assert no_model.json()["error"] == {
            "message": "Missing required parameter: 'model'.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "missing_required_parameter",
        }
        no_file = await http.post(
            f"{base_url}/audio/transcriptions", data={"model": STT}, files={"x": ("a", b"b")}
        )
        assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")
        too_big = await http.post(
            f"{base_url}/audio/transcriptions",
            data={"model": STT},
            files={"file": ("big.wav", bytes(25 * 1024 * 1024 + 1), "audio/wav")},
        )
        assert too_big.status_code == 413
        assert too_big.json()["error"]["type"] == "invalid_request_error"
        nowhere = await http.get(f"{base_url}/engines")
        assert nowhere.status_code == 404
        assert "error" in nowhere.json()

        # still usable
        whole = await client.audio.transcriptions.create(
            model=STT, file=("question.wav", question_wav, "audio/wav")
        )
        assert {"capital", "france"} <= words(whole.text)
        exposition = await metrics(base_url)
    # The uploads were refused after their admission (the file is read after it): counted,
    # and none left holding a place.
    assert samples(exposition, "voice_fsm_engine_requests_total", outcome="invalid")["stt"] == 3
    assert samples(exposition, "voice_fsm_engine_requests_in_progress") == dict.fromkeys(
        ("stt", "llm", "tts"), 0
    )


# ------------------------------------------------------------------------ access


async def test_with_api_keys_every_api_route_needs_one(
    engines: Engines, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = quick_settings(auth=AuthSettings(api_keys=[KEY]))  # type: ignore[list-item]
    async with served(engines, settings, key=KEY) as (client, base_url):
        assert [m.id async for m in client.models.list()] == [STT, LLM, TTS]
        wrong = client.with_options(api_key="not-the-key")
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.models.list()
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "invalid_api_key"
        async with httpx.AsyncClient() as http:
            keyless = await http.get(f"{base_url}/models")
            health = await http.get(base_url.removesuffix("/v1") + "/readyz")
            # No Host check with keys: a reverse proxy's or a Service's name is fine.
            named = await http.get(
                f"{base_url}/models",
                headers={"Host": "engines:8100", "Authorization": f"Bearer {KEY}"},
            )
    assert keyless.status_code == 401
    assert keyless.json()["error"]["type"] == "invalid_request_error"
    assert health.status_code == 200
    assert named.status_code == 200
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert "not-the-key" not in captured.out + captured.err


async def test_without_keys_the_host_must_name_this_server(engines: Engines) -> None:
    async with served(engines) as (_client, base_url), httpx.AsyncClient() as http:
        rebound = await http.get(f"{base_url}/models", headers={"Host": "attacker.example"})
        local = await http.get(f"{base_url}/models", headers={"Host": "localhost:8100"})
    assert rebound.status_code == 403
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    assert local.status_code == 200


# ------------------------------------------------------------------------ queue


async def test_a_request_waits_for_the_busy_engine_and_the_metrics_show_it(
    engines: Engines,
) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with served(engines) as (client, base_url):
        first = await client.chat.completions.create(model=LLM, messages=messages, stream=True)
        # The first stream holds the model (its first token is out); the second waits.
        second = asyncio.create_task(client.chat.completions.create(model=LLM, messages=messages))
        await until_metric(base_url, "voice_fsm_engine_queue_depth", 1)
        exposition = await metrics(base_url)
        assert samples(exposition, "voice_fsm_engine_busy")["llm"] == 1
        assert samples(exposition, "voice_fsm_engine_requests_in_progress")["llm"] == 2
        async for _chunk in first:
            pass
        assert (await second).choices[0].message.content
        exposition = await metrics(base_url)

    assert samples(exposition, "voice_fsm_engine_queue_wait_seconds_count")["llm"] == 2
    assert samples(exposition, "voice_fsm_engine_queue_wait_seconds_sum")["llm"] > 0
    assert samples(exposition, "voice_fsm_engine_busy")["llm"] == 0
    assert samples(exposition, "voice_fsm_engine_queue_depth")["llm"] == 0


async def test_past_max_waiting_a_request_is_refused_with_429(engines: Engines) -> None:
    text = "The capital of France is Paris. It lies on the Seine."
    async with served(engines, max_waiting=0) as (client, base_url):
        async with client.audio.speech.with_streaming_response.create(
            model=TTS, voice="alloy", input=text, response_format="pcm"
        ) as speaking:
            with pytest.raises(openai.RateLimitError):
                await client.audio.speech.create(
                    model=TTS, voice="alloy", input="Hi.", response_format="pcm"
                )
            assert len(await speaking.read()) > 0
        again = await client.audio.speech.create(
            model=TTS, voice="alloy", input="Hi.", response_format="pcm"
        )
        exposition = await metrics(base_url)
    assert len(again.content) > 0
    assert samples(exposition, "voice_fsm_engine_requests_total", outcome="refused")["tts"] == 1


async def test_a_client_that_leaves_mid_stream_frees_the_engine(engines: Engines) -> None:
    messages: Any = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    async with served(engines) as (client, base_url):
        stream = await client.chat.completions.create(model=LLM, messages=messages, stream=True)
        await anext(aiter(stream))
        await stream.close()
        whole = await client.chat.completions.create(model=LLM, messages=messages)
        exposition = await metrics(base_url)
    assert whole.choices[0].message.content
    assert samples(exposition, "voice_fsm_engine_requests_in_progress")["llm"] == 0
    assert samples(exposition, "voice_fsm_engine_requests_total", outcome="cancelled")["llm"] == 1


class HeldModel:
    """A language model that holds its engine's lane (as llama.cpp's does, one inference at a
    time) until `release` is set, then says "Done."."""

    provider = "held"
    model = "held"

    def __init__(self) -> None:
        self.lane = InferenceLane("llm")
        self.release = threading.Event()

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[ReplyEvent, None]:
        def produce(stop: StopFlag) -> Iterator[str]:
            while not self.release.wait(0.01):
                stop.check()
            yield "Done."

        async for text in self.lane.stream(produce):
            yield text

    async def aclose(self) -> None:
        pass


async def test_a_client_that_leaves_the_queue_costs_the_engine_nothing(engines: Engines) -> None:
    model = HeldModel()
    body = {"model": LLM, "messages": [{"role": "user", "content": QUESTION}]}
    async with (
        served(replace(engines, llm=model)) as (_client, base_url),
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        first = asyncio.create_task(http.post("/chat/completions", json=body))
        await until_metric(base_url, "voice_fsm_engine_busy", 1)  # the first has the engine
        with pytest.raises(httpx.ReadTimeout):  # the second waits, and gives up
            await http.post("/chat/completions", json=body, timeout=0.3)
        await until_metric(base_url, "voice_fsm_engine_requests_total", 1, outcome="cancelled")
        model.release.set()
        assert (await first).json()["choices"][0]["message"]["content"] == "Done."
        exposition = await metrics(base_url)
    assert samples(exposition, "voice_fsm_engine_queue_wait_seconds_count")["llm"] == 1
    assert samples(exposition, "voice_fsm_engine_queue_depth")["llm"] == 0
    assert samples(exposition, "voice_fsm_engine_requests_in_progress")["llm"] == 0
