"""`/v1/realtime` conversation items through the stock `openai` SDK, on a real server with fake
providers: a user's text item answered, an `input_audio` item transcribed like a commit, an
assistant's item truncated to the audio played (and the next request to the language model
showing only that), items deleted and retrieved, and unknown ids refused with the session
going on. Every server event is validated against the SDK's types (`Realtime.next`)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from test_realtime_endpoint import (
    MODEL,
    Realtime,
    asked,
    commit_a_turn,
    kinds,
    manual_session,
    sdk_client,
    serving,
    speech,
)
from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.testing import FakeOpenAIConfig

from session_harness import fake_pipeline, make_settings

pytestmark = pytest.mark.integration

REPLY = "The capital of France is Paris."
QUESTION = "What is the capital of France?"
REPLY_MS = 40 * len(REPLY)  # the fake speaks 40 ms a character


@pytest.fixture
def llm() -> FakeLanguageModel:
    return FakeLanguageModel(first_token_delay=0.01, token_delay=0.002)


@pytest.fixture
async def rt(llm: FakeLanguageModel) -> AsyncIterator[Realtime]:
    async with (
        serving(make_settings(), llm) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


def user_text(text: str, **extra: Any) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item, **extra}


async def respond(rt: Realtime) -> dict[str, Any]:
    await rt.send({"type": "response.create"})
    done = (await rt.done())[-1]["response"]
    assert done["status"] == "completed"
    return done


async def test_a_user_text_item_is_added_then_answered(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    await rt.send(user_text("Where is the Eiffel Tower?"))
    added, done = await rt.next(), await rt.next()
    assert kinds([added, done]) == ["conversation.item.added", "conversation.item.done"]
    item = done["item"]
    assert (item["role"], item["status"]) == ("user", "completed")
    assert item["content"] == [{"type": "input_text", "text": "Where is the Eiffel Tower?"}]
    assert added["item"]["id"] == item["id"]
    response = await respond(rt)
    assert asked(llm)[-1] == [
        ("system", "Answer briefly."),
        ("user", "Where is the Eiffel Tower?"),
    ]
    # The next item comes after the reply: previous_item_id chains them.
    await rt.send(user_text("And the Louvre?"))
    assert (await rt.next())["previous_item_id"] == response["output"][0]["id"]


async def test_a_text_item_after_a_transcribed_turn_comes_after_it(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    await rt.send(user_text("In one word."))
    await rt.until("conversation.item.done")
    await respond(rt)
    assert asked(llm)[-1][1:] == [("user", QUESTION), ("user", "In one word.")]


async def test_an_input_audio_item_is_transcribed_like_a_commit(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    audio = base64.b64encode(speech(400)).decode()
    item = {"id": "item_mine", "type": "message", "role": "user"}
    item["content"] = [{"type": "input_audio", "audio": audio}]  # type: ignore[assignment]
    await rt.send({"type": "conversation.item.create", "item": item})
    heard = await rt.until("conversation.item.input_audio_transcription.completed")
    assert heard[0]["type"] == "input_audio_buffer.committed"
    assert heard[0]["item_id"] == heard[-1]["item_id"] == "item_mine"
    assert heard[-1]["transcript"] == QUESTION
    await respond(rt)
    assert asked(llm)[-1][-1] == ("user", QUESTION)


async def test_previous_item_id_root_puts_the_item_first(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    await rt.send(user_text("Speak French.", previous_item_id="root"))
    added = await rt.next()
    assert added["type"] == "conversation.item.added"
    assert added.get("previous_item_id") is None
    await rt.until("conversation.item.done")
    await rt.send(user_text("Lost.", previous_item_id="item_nowhere", event_id="e1"))
    error = (await rt.next())["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_value",
        "previous_item_id",
        "e1",
    )
    await respond(rt)
    assert asked(llm)[-1][1:] == [("user", "Speak French."), ("user", QUESTION)]


@pytest.fixture
async def openai_rt(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: Callable[[str], Any]
) -> AsyncIterator[Realtime]:
    """The language model is OpenAI's adapter on the fake OpenAI server, which records each
    request it gets."""
    _, base_url = fake_openai
    pipeline = fake_pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=make_openai_llm(base_url),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002),
    )
    async with (
        serving(make_settings(), pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


def chat_messages(config: FakeOpenAIConfig) -> list[list[tuple[str, str]]]:
    """Each chat request the fake OpenAI server received: its messages as (role, content)."""
    return [
        [(m["role"], m.get("content") or "") for m in request.json["messages"]]
        for request in config.received("chat")
        if request.json is not None
    ]


async def test_a_truncated_reply_is_what_the_next_request_sees(
    openai_rt: Realtime, fake_openai: tuple[FakeOpenAIConfig, str]
) -> None:
    rt, (config, _) = openai_rt, fake_openai
    await manual_session(rt)
    await commit_a_turn(rt)
    reply = (await respond(rt))["output"][0]
    assert reply["content"][0]["transcript"] == REPLY
    # The client played half of it when its user stopped listening.
    truncate = {"type": "conversation.item.truncate", "item_id": reply["id"], "content_index": 0}
    await rt.send({**truncate, "audio_end_ms": REPLY_MS // 2})
    truncated = await rt.next()
    assert truncated == {
        "type": "conversation.item.truncated",
        "event_id": truncated["event_id"],
        "item_id": reply["id"],
        "content_index": 0,
        "audio_end_ms": REPLY_MS // 2,
    }
    await rt.send({"type": "conversation.item.retrieve", "item_id": reply["id"]})
    retrieved = (await rt.next())["item"]
    assert retrieved["content"] == [{"type": "output_audio", "transcript": "The capital of …"}]
    await commit_a_turn(rt)
    await respond(rt)
    first, second = chat_messages(config)
    assert first[1:] == [("user", QUESTION)]
    assert second[1:] == [
        ("user", QUESTION),
        ("assistant", "The capital of …"),
        ("user", QUESTION),
    ]


async def test_truncating_past_the_audio_or_a_text_item_is_refused(rt: Realtime) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    reply = (await respond(rt))["output"][0]["id"]
    await rt.send(user_text("Hello."))
    text_item = (await rt.until("conversation.item.done"))[-1]["item"]["id"]
    cut = {"type": "conversation.item.truncate", "content_index": 0}
    await rt.send({**cut, "item_id": reply, "audio_end_ms": REPLY_MS + 1000, "event_id": "e1"})
    await rt.send({**cut, "item_id": text_item, "audio_end_ms": 0, "event_id": "e2"})
    errors = [(await rt.next())["error"] for _ in range(2)]
    assert [(e["code"], e["param"], e["event_id"]) for e in errors] == [
        ("invalid_value", "audio_end_ms", "e1"),
        ("unsupported_content_type", "item_id", "e2"),
    ]
    assert errors[0]["message"] == f"Audio content of {REPLY_MS}ms is already shorter than " + (
        f"{REPLY_MS + 1000}ms."
    )


async def test_delete_takes_an_item_out_of_the_history_and_retrieve_shows_one(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    heard = await commit_a_turn(rt)
    user_item = heard[0]["item_id"]
    reply = (await respond(rt))["output"][0]["id"]
    await rt.send({"type": "conversation.item.retrieve", "item_id": user_item})
    retrieved = await rt.next()
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["id"] == user_item
    assert retrieved["item"]["content"] == [{"type": "input_audio", "transcript": QUESTION}]
    await rt.send({"type": "conversation.item.delete", "item_id": reply})
    assert await rt.next() == {
        "type": "conversation.item.deleted",
        "event_id": rt.events[-1]["event_id"],
        "item_id": reply,
    }
    await rt.send(user_text("Again?"))
    await rt.until("conversation.item.done")
    await respond(rt)
    assert asked(llm)[-1][1:] == [("user", QUESTION), ("user", "Again?")]


async def test_unknown_item_ids_are_refused_and_the_session_goes_on(rt: Realtime) -> None:
    await manual_session(rt)
    truncate = {"type": "conversation.item.truncate", "content_index": 0, "audio_end_ms": 10}
    await rt.send({**truncate, "item_id": "item_gone", "event_id": "e1"})
    await rt.send({"type": "conversation.item.delete", "item_id": "item_gone", "event_id": "e2"})
    await rt.send({"type": "conversation.item.retrieve", "item_id": "item_gone", "event_id": "e3"})
    errors = [await rt.next() for _ in range(3)]
    assert kinds(errors) == ["error"] * 3
    assert [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in errors] == [
        ("invalid_value", "item_id", "e1"),
        ("invalid_value", "item_id", "e2"),
        ("invalid_value", "item_id", "e3"),
    ]
    assert all("item_gone" in e["error"]["message"] for e in errors)
    heard = await commit_a_turn(rt)
    assert heard[-1]["transcript"] == QUESTION
    await respond(rt)


async def test_an_out_of_band_response_has_its_own_instructions_and_stays_out_of_the_history(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    updated = await manual_session(rt)
    assert updated["session"]["model"] == MODEL  # as the client asked, in session.updated too
    await commit_a_turn(rt)
    await respond(rt)
    question, answer = ("user", QUESTION), ("assistant", REPLY)
    summary = {
        "conversation": "none",
        "instructions": "Summarize the conversation in one line.",
        "output_modalities": ["text"],
    }
    await rt.send({"type": "response.create", "response": summary})
    events = await rt.until("response.done")
    assert "conversation.item.added" not in kinds(events)
    assert "conversation.item.done" not in kinds(events)
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert "conversation_id" not in done
    assert done["output"][0]["content"] == [{"type": "output_text", "text": REPLY}]
    assert asked(llm)[-1] == [("system", summary["instructions"]), question, answer]
    # The next response sees the history without it, under the session's instructions.
    await respond(rt)
    assert asked(llm)[-1] == [("system", "Answer briefly."), question, answer]


async def test_a_response_with_its_own_input_is_refused(rt: Realtime) -> None:
    await manual_session(rt)
    response = {"conversation": "none", "input": []}
    await rt.send({"type": "response.create", "response": response, "event_id": "e1"})
    error = (await rt.next())["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "unsupported_value",
        "response.input",
        "e1",
    )
