"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`) as a real
subprocess on a free port, serving one of the embedded engines' GGUF models."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voice_fsm.adapters.local.models import gguf_model
from voice_fsm.adapters.local.packages import LocalModelMissing

from support.servers import clean_env, free_port, running_server, skip_or_fail

MODEL_ALIAS = "qwen2.5-coder-0.5b"


@dataclass
class LlamaServer:
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> int:
        """How many chat completions the server has answered (its access log)."""
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', text))


@contextmanager
def running_llama_server(
    workdir: Path, *extra: str, model: str | None = None
) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` with the embedded language model (Qwen2.5-Coder-0.5B unless
    `model` names another), its GGUF chat template (no --chat_format), 2 threads, a 4096-token
    context and requests served in turn, not cut off by the next; `extra` are more options.
    Skips (fails under CI=true) without the server extra or the model."""
    if importlib.util.find_spec("llama_cpp.server") is None or not _has_server_extra():
        skip_or_fail("llama-cpp-python's server extra is not installed (make install adds it)")
    try:
        path = gguf_model(model)
    except LocalModelMissing as err:
        skip_or_fail(str(err))
    port = free_port()
    log = workdir / f"llama-server-{port}.log"
    args = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(path), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "4096", "--n_threads", "2", "--n_threads_batch", "2",
        "--interrupt_requests", "False",
        *extra,
    ]  # fmt: skip
    with running_server(
        args,
        ready_url=f"http://127.0.0.1:{port}/v1/models",
        env=clean_env(),
        cwd=workdir,
        log=log,
        timeout=60,
    ):
        yield LlamaServer(port, log)


def _has_server_extra() -> bool:
    return all(importlib.util.find_spec(name) for name in ("fastapi", "sse_starlette"))
