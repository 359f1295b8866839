"""At start-up, one cheap request to each OpenAI(-compatible) provider: is the key accepted,
does the host resolve, does the server answer?

A server with a rejected key or a misspelt base URL starts and looks healthy, and every turn
then fails. The check (``GET /models``, free, no retry) runs in the background as the server
starts, once per distinct base URL and key; a failure is logged as one
``provider.check_failed`` warning naming the stage, the reason and the fix, and `/healthz`
reports ``"status": "degraded"`` with the same (see app.py). A key does not change while the
process runs, so a rejected one stays reported; an unreachable provider is asked again every
`RECHECK_S` until it answers, and the problem is cleared then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import httpx
import openai
from openai import AsyncOpenAI

from voice_fsm.adapters.openai.errors import is_name_lookup_failure, translate
from voice_fsm.errors import ErrorCode, Stage
from voice_fsm.logging_setup import get_logger
from voice_fsm.settings import Settings

RECHECK_S = 30.0
"""How soon an unreachable provider is asked again."""


@dataclass(frozen=True, slots=True)
class StageProblem:
    """Why a stage's provider cannot serve turns, and what to do about it."""

    stage: str
    code: str
    """`ErrorCode` value: provider-auth (a rejected key), provider-error (a host name that
    does not resolve) or provider-unavailable (no answer)."""
    reason: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def diagnose(err: BaseException, stage: str, settings: Settings) -> StageProblem | None:
    """The problem a failed check shows, or None when it does not stop turns (a server
    without ``/models`` answers 404, say)."""
    group = stage.upper()
    url = settings.base_url_for(getattr(settings, stage)) or "https://api.openai.com/v1"
    reason = translate(err, Stage(stage), settings.secrets()).message
    if isinstance(err, openai.APIStatusError) and err.status_code in (401, 403):
        fix = (
            f"check the key (VOICE_FSM_{group}__API_KEY or OPENAI_API_KEY); or remove it to "
            "run offline with the embedded engines"
        )
        return StageProblem(stage, ErrorCode.PROVIDER_AUTH.value, reason, fix)
    if isinstance(err, openai.APIStatusError):
        return None
    if is_name_lookup_failure(err):
        return StageProblem(
            stage,
            ErrorCode.PROVIDER_ERROR.value,
            reason,
            f"check the base URL (VOICE_FSM_{group}__BASE_URL or OPENAI_BASE_URL, now {url}) "
            "and this machine's network and DNS",
        )
    if isinstance(err, (openai.APIConnectionError, httpx.HTTPError, OSError)):
        return StageProblem(
            stage,
            ErrorCode.PROVIDER_UNAVAILABLE.value,
            reason,
            f"check that a server answers at {url} (VOICE_FSM_{group}__BASE_URL or "
            "OPENAI_BASE_URL) and the network",
        )
    return None


class ProviderCheck:
    """The start-up check of the stages served over OpenAI's API (see the module docstring)."""

    def __init__(self, settings: Settings, clients: Mapping[str, AsyncOpenAI]) -> None:
        """`clients` maps a stage name to the client its adapter uses."""
        self._settings = settings
        self._groups: dict[tuple[str | None, str | None], list[str]] = {}
        self._clients = dict(clients)
        for stage in clients:
            config = getattr(settings, stage)
            key = (settings.base_url_for(config), settings.api_key_for(config))
            self._groups.setdefault(key, []).append(stage)
        self.problems: dict[str, StageProblem] = {}
        """Stage name → its problem, for the stages whose provider failed the check."""
        self._unchecked = set(clients)
        self._answered = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger()

    def start(self) -> None:
        """Begin checking in the background; returns at once."""
        if not self._unchecked:
            self._answered.set()
        for stages in self._groups.values():
            task = asyncio.create_task(self._watch(stages), name=f"check-{'-'.join(stages)}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def checked(self) -> None:
        """Wait until every stage has had its first answer (tests; the server never waits)."""
        await self._answered.wait()

    async def _watch(self, stages: list[str]) -> None:
        while True:
            problem = await self._check(stages[0])
            self._unchecked.difference_update(stages)
            if not self._unchecked:
                self._answered.set()
            for stage in stages:
                self._report(stage, problem)
            if problem is None or problem.code == ErrorCode.PROVIDER_AUTH.value:
                return
            await asyncio.sleep(RECHECK_S)

    async def _check(self, stage: str) -> StageProblem | None:
        seconds = getattr(self._settings, stage).timeout
        try:
            await (
                self._clients[stage]
                .with_options(max_retries=0, timeout=seconds)
                .get("/models", cast_to=httpx.Response)
            )
        except (openai.OpenAIError, httpx.HTTPError, OSError) as err:
            return diagnose(err, stage, self._settings)
        return None

    def _report(self, stage: str, problem: StageProblem | None) -> None:
        before = self.problems.get(stage)
        if problem is None:
            if before is not None:
                del self.problems[stage]
                self._log.info("provider.check_recovered", stage=stage)
            return
        self.problems[stage] = problem
        if before != problem:
            self._log.warning(
                "provider.check_failed", stage=stage, code=problem.code,
                reason=problem.reason, fix=problem.fix,
            )  # fmt: skip

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
