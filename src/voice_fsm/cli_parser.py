"""The `voice-fsm` command line: its commands and options, and how a usage problem is
reported (one line on stderr, exit code 2)."""

from __future__ import annotations

import argparse
import sys

from voice_fsm import __version__

PROG = "voice-fsm"
WAV_FORMATS = (
    "WAV files of 8, 16, 24 or 32-bit integer PCM or 32 or 64-bit float samples, at any "
    "sample rate, mono or with several channels (mixed down); they are sent as 16-bit 24 kHz mono"
)
"""What `talk` reads (talk.load_wav), for its --help and for the error on a file it cannot.
Here rather than in talk.py so that `serve` need not import the client (numpy, websockets)."""


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {number}")
    return number


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A voice agent server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings come from VOICE_FSM_* variables and .env.",
    )
    serve.add_argument("--host", help="interface to listen on (default: VOICE_FSM_HOST)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: VOICE_FSM_PORT)")
    serve.add_argument("--ssl-certfile", help="serve https and wss with this certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen on a non-loopback address without VOICE_FSM_AUTH__API_KEYS",
    )

    engines = commands.add_parser(
        "engines",
        help="serve the embedded engines over the OpenAI API, for serve processes to share",
        description="Load the embedded engines (Whisper, llama.cpp, Piper) once and serve them "
        "over the OpenAI HTTP API (/v1/audio/transcriptions, /v1/chat/completions, "
        "/v1/audio/speech, /v1/models), so that any number of `serve` processes share them: "
        "point their VOICE_FSM_STT__BASE_URL, VOICE_FSM_LLM__BASE_URL and "
        "VOICE_FSM_TTS__BASE_URL at http://HOST:PORT/v1. The models are chosen by "
        "VOICE_FSM_LOCAL__* as for serve. See docs/engines.md.",
    )
    engines.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    engines.add_argument("--port", type=_port, help="port to listen on (default: 8100)")
    engines.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen on a non-loopback address without VOICE_FSM_AUTH__API_KEYS",
    )
    engines.add_argument(
        "--max-waiting",
        type=_count,
        help="requests that may wait for one engine; more get 429 (default: 16)",
    )

    talk = commands.add_parser(
        "talk",
        help="send a WAV file as one turn and show the reply",
        description=f"Send a WAV file as one push-to-talk turn and show the reply. It reads "
        f"{WAV_FORMATS}.",
    )
    talk.add_argument("--wav", required=True, help="the question: a WAV file (see above)")
    talk.add_argument("--out", help="save the spoken reply here (24 kHz mono WAV)")
    talk.add_argument(
        "--url",
        help="the server's WebSocket, ws[s]://HOST:PORT/ws (default: from VOICE_FSM_HOST and "
        "VOICE_FSM_PORT in the environment or .env, as serve reads them: ws://127.0.0.1:8000/ws "
        "unless they are set)",
    )
    talk.add_argument("--realtime", action="store_true", help="send audio at speaking pace")
    talk.add_argument("--json", action="store_true", help="print one JSON object")
    talk.add_argument(
        "--api-key",
        help="the server's API key (default: the first of the VOICE_FSM_AUTH__API_KEYS "
        "environment variable, if set; never read from .env, never printed)",
    )
    talk.add_argument("--cafile", help="trust this CA certificate for wss:// (PEM)")
    talk.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        help="seconds the turn may take, besides sending at --realtime pace (default: 30)",
    )

    latency = commands.add_parser(
        "latency",
        help="p50/p95/p99 per stage and outcomes from turn.completed log lines",
        description="Read turn.completed JSON lines from log files (or standard input) and "
        "print p50/p95/p99 per stage, outcome counts and error codes. Other lines are skipped "
        "and counted.",
    )
    latency.add_argument("files", nargs="*", metavar="FILE", help="log files; - or none: stdin")
    latency.add_argument(
        "--by", choices=("hour", "provider", "mode"), help="also one table per group"
    )
    latency.add_argument("--json", action="store_true", help="print one JSON object")
    latency.add_argument(
        "--png", metavar="FILE", help="draw the dashboard's charts (needs matplotlib)"
    )
    return parser


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2
