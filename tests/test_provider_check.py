"""The start-up check of the OpenAI providers: a rejected key or a host that does not resolve
is a warning naming the stage and the fix, and /healthz says "degraded" (still 200)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from voice_fsm import provider_check
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.errors import translate
from voice_fsm.errors import ErrorCode, Stage
from voice_fsm.provider_check import ProviderCheck
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, running_fake_openai

from support.openai_wire import BASE_URL, KEY, error_response, openai_settings
from support.servers import (
    QUICK_FAKES,
    console_script,
    eventually,
    eventually_sync,
    fake_env,
    free_port,
    run_talk,
    running_server,
)

UNRESOLVABLE = "http://voice-fsm-check.invalid/v1"


async def _check(settings: Settings, *stages: str) -> tuple[ProviderCheck, list[dict[str, Any]]]:
    clients = {stage: make_openai_client(settings, getattr(settings, stage)) for stage in stages}
    check = ProviderCheck(settings, clients)
    with capture_logs() as logs:
        check.start()
        await check.checked()
    await check.aclose()
    for client in clients.values():
        await client.close()
    return check, logs


@respx.mock(base_url=BASE_URL, assert_all_called=True)
async def test_a_rejected_key_is_a_warning_with_the_fix(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/models").mock(
        return_value=error_response(
            401, f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key"
        )
    )
    check, logs = await _check(openai_settings("llm"), "llm", "tts")
    assert route.call_count == 1  # one request for the stages that share a key and a URL
    assert set(check.problems) == {"llm", "tts"}
    problem = check.problems["llm"]
    assert problem.code == "provider-auth"
    assert "returned 401: Incorrect API key provided" in problem.reason
    assert KEY not in problem.reason
    assert "VOICE_FSM_LLM__API_KEY or OPENAI_API_KEY" in problem.fix
    assert "remove it to run offline" in problem.fix
    warnings = [entry for entry in logs if entry["event"] == "provider.check_failed"]
    assert [(w["log_level"], w["stage"]) for w in warnings] == [
        ("warning", "llm"),
        ("warning", "tts"),
    ]
    assert warnings[0]["fix"] == problem.fix


async def test_a_host_that_does_not_resolve_names_the_base_url() -> None:
    settings = openai_settings("llm", base_url=UNRESOLVABLE)
    check, logs = await _check(settings, "llm")
    problem = check.problems["llm"]
    assert problem.code == "provider-error"
    assert "the host name voice-fsm-check.invalid does not resolve" in problem.reason
    assert f"VOICE_FSM_LLM__BASE_URL or OPENAI_BASE_URL, now {UNRESOLVABLE}" in problem.fix
    (warning,) = [entry for entry in logs if entry["event"] == "provider.check_failed"]
    assert warning["log_level"] == "warning"


def test_a_turns_name_lookup_failure_does_not_say_try_again() -> None:
    error = httpx.ConnectError("[Errno -2] Name or service not known")
    # As httpx raises it: from httpcore's ConnectError, from the resolver's gaierror.
    error.__cause__ = OSError("httpcore.ConnectError")
    error.__cause__.__cause__ = socket.gaierror(-2, "Name or service not known")
    translated = translate(error, Stage.LLM)
    assert translated.code is ErrorCode.PROVIDER_ERROR
    assert not translated.retryable  # the page's advice for retryable codes is "try again"
    assert "does not resolve" in translated.message
    assert "again" not in translated.message.lower()


@respx.mock(base_url=BASE_URL)
async def test_a_server_without_models_is_no_problem(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/models").mock(
        return_value=error_response(404, "Invalid URL", "invalid_request_error", None)
    )
    check, logs = await _check(openai_settings("llm"), "llm")
    assert check.problems == {}
    assert [e for e in logs if e["event"] == "provider.check_failed"] == []


@respx.mock(base_url=BASE_URL)
async def test_an_unreachable_provider_is_asked_again_until_it_answers(
    respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_check, "RECHECK_S", 0.01)
    route = respx_mock.get("/models")
    route.side_effect = [httpx.ConnectError("Connection refused"), httpx.Response(200, json={})]
    settings = openai_settings("llm")
    client = make_openai_client(settings, settings.llm)
    check = ProviderCheck(settings, {"llm": client})
    with capture_logs() as logs:
        check.start()
        await check.checked()
        assert check.problems["llm"].code == "provider-unavailable"
        await eventually(lambda: not check.problems)
    await check.aclose()
    await client.close()
    assert route.call_count == 2
    assert [e["event"] for e in logs if e["event"].startswith("provider.check")] == [
        "provider.check_failed",
        "provider.check_recovered",
    ]


# ---------------------------------------------------------------- a real server


def _serve(tmp_path: Path, **env: str) -> Any:
    port = free_port()
    return port, running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=fake_env(**QUICK_FAKES, **env),
        cwd=tmp_path,
        log=tmp_path / "server.log",
        timeout=60,
    )


def _degraded(url: str) -> dict[str, Any]:
    holder: list[dict[str, Any]] = []

    def check() -> bool:
        response = httpx.get(url, timeout=2)
        assert response.status_code == 200  # liveness: the process is fine
        holder[:] = [response.json()]
        return holder[0]["status"] == "degraded"

    eventually_sync(check, seconds=10)
    return holder[0]


@pytest.mark.integration
def test_a_server_with_a_rejected_key_reports_degraded(tmp_path: Path) -> None:
    config = FakeOpenAIConfig(api_key="sk-the-right-key-0123456789")
    with running_fake_openai(config) as base_url:
        port, server = _serve(
            tmp_path,
            VOICE_FSM_LLM__PROVIDER="openai",
            VOICE_FSM_LLM__BASE_URL=base_url,
            VOICE_FSM_LLM__API_KEY="sk-a-wrong-key-0123456789",
        )
        with server:
            health = _degraded(f"http://127.0.0.1:{port}/healthz")
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    (problem,) = health["problems"]
    assert problem["stage"] == "llm"
    assert problem["code"] == "provider-auth"
    assert "VOICE_FSM_LLM__API_KEY" in problem["fix"]
    assert "sk-a-wrong-key" not in json.dumps(health)
    # Readiness is about taking new sessions (draining, full), not about the providers: a
    # load balancer that took every instance with a bad key out would leave users nothing.
    assert ready.status_code == 200
    text = (tmp_path / "server.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    (warning,) = [line for line in lines if line.get("event") == "provider.check_failed"]
    assert (warning["level"], warning["stage"]) == ("warning", "llm")


@pytest.mark.integration
def test_a_server_with_an_unresolvable_base_url_reports_degraded(tmp_path: Path) -> None:
    port, server = _serve(
        tmp_path,
        VOICE_FSM_LLM__PROVIDER="openai",
        VOICE_FSM_LLM__BASE_URL=UNRESOLVABLE,
        VOICE_FSM_LLM__API_KEY="sk-any-key-0123456789",
    )
    with server:
        health = _degraded(f"http://127.0.0.1:{port}/healthz")
        talk = run_talk(tmp_path, f"ws://127.0.0.1:{port}/ws")
    (problem,) = health["problems"]
    assert (problem["stage"], problem["code"]) == ("llm", "provider-error")
    assert "voice-fsm-check.invalid" in problem["reason"]
    # The turn's error says what is wrong, and not to try again shortly.
    (result,) = [json.loads(line) for line in talk.stdout.splitlines() if line.startswith("{")]
    error = result["error"]
    assert (error["code"], error["retryable"]) == ("provider-error", False)
    assert "does not resolve" in error["message"]
    assert "shortly" not in (talk.stdout + talk.stderr).lower()
