"""The `voice-fsm` command: start-up errors of `serve`, and the `talk` client."""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from voice_fsm.audio import bytes_for_ms, pcm_to_wav
from voice_fsm.cli import env_var_for, format_settings_error, main
from voice_fsm.errors import ErrorCode, Stage
from voice_fsm.events import (
    AudioDone,
    AudioFormat,
    AudioStart,
    ErrorEvent,
    ResponseDelta,
    ResponseDone,
    SessionConfig,
    SessionCreated,
    StageInfo,
    StateChanged,
    StateName,
    TranscriptDeltaEvent,
    TranscriptDoneEvent,
    TurnMetrics,
)
from voice_fsm.settings import Settings
from voice_fsm.talk import (
    WAV_FORMATS,
    TalkError,
    client_host,
    iter_frames,
    load_wav,
    talk,
    websocket_url,
)

from support.servers import clean_env, console_script, free_port

# ---------------------------------------------------------------- serve: start-up errors


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), "serve"],
        env=clean_env(**env),
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "VOICE_FSM_PORT",
            "eighty",
            "voice-fsm: invalid setting VOICE_FSM_PORT: Input should be a valid integer",
        ),
        (
            "VOICE_FSM_LLM__TIMEOUT",
            "soon",
            "voice-fsm: invalid setting VOICE_FSM_LLM__TIMEOUT: Input should be a valid number",
        ),
    ],
)
def test_serve_with_a_bad_setting_names_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    done = run_serve(tmp_path, **{variable: value})
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(expected)
    assert done.stdout == ""


def test_serve_with_openai_but_no_key_explains_and_exits_2(tmp_path: Path) -> None:
    done = run_serve(tmp_path, VOICE_FSM_STT__PROVIDER="openai")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("voice-fsm: ")
    assert "OPENAI_API_KEY" in done.stderr


def test_serve_reports_a_bad_group_in_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VOICE_FSM_TTS={not json\n")
    done = run_serve(tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "voice-fsm: invalid setting VOICE_FSM_TTS (in .env): not valid JSON"
    )
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("loc", "variable"),
    [
        (("port",), "VOICE_FSM_PORT"),
        (("llm", "timeout"), "VOICE_FSM_LLM__TIMEOUT"),
        (("log", "level"), "VOICE_FSM_LOG__LEVEL"),
        (("openai_api_key",), "OPENAI_API_KEY"),
        (("OPENAI_BASE_URL",), "OPENAI_BASE_URL"),
    ],
)
def test_env_var_for(loc: tuple[str, ...], variable: str) -> None:
    assert env_var_for(loc) == variable


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ValidationError | SettingsError:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, SettingsError)) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert isinstance(caught.value, ValidationError | SettingsError)
    return caught.value


def test_format_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    err = settings_error(monkeypatch, VOICE_FSM_LLM__BASE_URL="ftp://example.com")
    assert format_settings_error(err) == (
        "invalid setting VOICE_FSM_LLM__BASE_URL: must start with http:// or https://"
    )


def test_format_several_errors_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = settings_error(monkeypatch, VOICE_FSM_PORT="99999", VOICE_FSM_LOG__LEVEL="loud")
    line = format_settings_error(err)
    assert "\n" not in line
    assert line.startswith("invalid settings: ")
    assert "VOICE_FSM_PORT: Input should be less than or equal to 65535" in line
    assert "VOICE_FSM_LOG__LEVEL: Input should be 'debug'" in line


def test_format_a_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, OPENAI_BASE_URL=5)  # type: ignore[call-arg]
    assert format_settings_error(caught.value) == (
        "invalid setting OPENAI_BASE_URL: Input should be a valid string"
    )


def test_format_a_group_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    err = settings_error(monkeypatch, VOICE_FSM_LLM="{")
    assert format_settings_error(err).startswith("invalid setting VOICE_FSM_LLM: not valid JSON (")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["talk"])
    assert caught.value.code == 2
    assert "--wav" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--port", "70000"])
    assert caught.value.code == 2


# ---------------------------------------------------------------- talk: a tiny server


REPLY_PCM = bytes(range(256)) * 30  # 7,680 bytes, an odd pattern to compare exactly


@dataclass
class TinyServer:
    """Speaks just enough of protocol v1 to run one turn; records the audio it receives."""

    outcome: str = "ok"  # ok | error | silent | refuse (404) | refuse-401 | hangup
    url: str = ""
    frames: list[bytes] = field(default_factory=list)
    messages: list[dict[str, object]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)  # the upgrade requests it got

    def handle(self, ws: ServerConnection) -> None:
        if self.outcome == "silent":
            with contextlib.suppress(ConnectionClosed):
                for _ in ws:  # say nothing until the client gives up
                    pass
            return
        ws.send(session_created().model_dump_json())
        try:
            for message in ws:
                if isinstance(message, bytes):
                    self.frames.append(message)
                    continue
                self.messages.append(json.loads(message))
                kind = self.messages[-1]["type"]
                if kind == "input_audio.start" and self.outcome == "hangup":
                    ws.close(1011, "boom")
                elif kind == "input_audio.start":
                    ws.send(state("recording", "idle"))
                elif kind == "input_audio.stop":
                    self.reply(ws)
        except ConnectionClosed:
            pass

    def reply(self, ws: ServerConnection) -> None:
        ws.send(state("transcribing", "recording"))
        if self.outcome == "error":
            ws.send(
                ErrorEvent(
                    code=ErrorCode.PROVIDER_AUTH,
                    stage=Stage.STT,
                    message="The provider rejected the API key.",
                    retryable=False,
                    turn=1,
                ).model_dump_json()
            )
            ws.send(state("idle", "transcribing"))
            return
        ws.send(TranscriptDeltaEvent(turn=1, text="Hello").model_dump_json())
        ws.send(TranscriptDoneEvent(turn=1, text="Hello there.").model_dump_json())
        ws.send('{"type":"from.the.future","turn":1}')
        ws.send(state("thinking", "transcribing"))
        ws.send(ResponseDelta(turn=1, text="Hi").model_dump_json())
        ws.send(ResponseDelta(turn=1, text=" you.").model_dump_json())
        ws.send(state("speaking", "thinking"))
        ws.send(AudioStart(turn=1, sample_rate=24_000).model_dump_json())
        ws.send(REPLY_PCM[:5000])
        ws.send(ResponseDone(turn=1, text="Hi you.", interrupted=False).model_dump_json())
        ws.send(REPLY_PCM[5000:])
        ws.send(AudioDone(turn=1, bytes=len(REPLY_PCM), duration_ms=160).model_dump_json())
        ws.send(state("idle", "speaking"))
        ws.send(
            TurnMetrics(
                turn=1,
                audio_in_ms=1000,
                stt_ms=120,
                llm_first_token_ms=80,
                llm_ms=200,
                tts_first_audio_ms=150,
                tts_ms=300,
                voice_to_voice_ms=412,
            ).model_dump_json()
        )

    @property
    def audio(self) -> bytes:
        return b"".join(self.frames)


def session_created() -> SessionCreated:
    stage = StageInfo(provider="fake", model="tiny")
    return SessionCreated(
        session_id="s1",
        protocol=1,
        input_audio=AudioFormat(),
        output_audio=AudioFormat(),
        stt=stage,
        llm=stage,
        tts=stage,
        modes=["push_to_talk"],
        session=SessionConfig(),
    )


def state(current: StateName, previous: StateName) -> str:
    return StateChanged(state=current, previous=previous, turn=1).model_dump_json()


@contextmanager
def tiny_server(outcome: str = "ok") -> Iterator[TinyServer]:
    tiny = TinyServer(outcome=outcome)

    def refuse(connection: ServerConnection, request: Request) -> Response | None:
        tiny.requests.append(request)
        if outcome == "refuse-401":
            return connection.respond(401, "Unauthorized\n")
        return connection.respond(404, "Not Found\n") if outcome == "refuse" else None

    with serve(tiny.handle, "127.0.0.1", 0, process_request=refuse) as server:
        tiny.url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield tiny
        finally:
            server.shutdown()
            thread.join(5)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write float samples (frames x channels) as 16-bit PCM."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((frames * 32767).astype("<i2").tobytes())


def tone(seconds: float, rate: int, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# ---------------------------------------------------------------- talk: audio handling


def test_a_22050_hz_stereo_wav_is_sent_as_24_khz_mono(tmp_path: Path) -> None:
    left = tone(1.0, 22_050)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, left], axis=1), 22_050)
    pcm = load_wav(path)
    assert len(pcm) == 24_000 * 2  # one second of PCM16 mono at 24 kHz

    with tiny_server() as server:
        assert main(["talk", "--wav", str(path), "--url", server.url]) == 0
    assert server.audio == pcm
    frame = bytes_for_ms(40)
    assert [len(f) for f in server.frames] == [frame] * (len(pcm) // frame)
    samples = np.frombuffer(server.audio, dtype="<i2").astype(np.float32) / 32768
    assert 0.2 < float(np.sqrt(np.mean(samples**2))) < 0.22  # the tone survived (0.3 / sqrt 2)


def test_iter_frames_keeps_a_short_last_frame() -> None:
    pcm = bytes(bytes_for_ms(100))
    assert [len(frame) for frame in iter_frames(pcm)] == [1920, 1920, 960]


def test_load_wav_rejects_what_is_not_a_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio")
    with pytest.raises(TalkError, match="as a WAV file: it is text, not audio"):
        load_wav(path)
    with pytest.raises(TalkError, match="cannot read"):
        load_wav(tmp_path / "missing.wav")


# ---------------------------------------------------------------- talk: the turn


@pytest.fixture
def question(tmp_path: Path) -> Path:
    path = tmp_path / "question.wav"
    write_wav(path, tone(0.4, 16_000), 16_000)
    return path


async def test_talk_collects_the_turn() -> None:
    with tiny_server() as server:
        result = await talk(server.url, bytes(bytes_for_ms(200)))
    assert result.ok
    assert (result.transcript, result.reply, result.turn) == ("Hello there.", "Hi you.", 1)
    assert result.audio == REPLY_PCM
    assert result.metrics is not None
    assert result.metrics.voice_to_voice_ms == 412
    assert [m["type"] for m in server.messages] == ["input_audio.start", "input_audio.stop"]
    assert "from.the.future" not in [event.type for event in result.events]


async def test_talk_paces_audio_in_realtime() -> None:
    with tiny_server() as server:
        started = time.perf_counter()
        await talk(server.url, bytes(bytes_for_ms(400)), realtime=True)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.35  # ten 40 ms frames, the last one sent at 360 ms
    assert len(server.frames) == 10


async def test_talk_times_out_with_what_it_waited_for() -> None:
    expected = r"timed out after 0.3 s waiting for session.created"
    with tiny_server("silent") as server, pytest.raises(TalkError, match=expected):
        await talk(server.url, b"", time_limit=0.3)


async def test_talk_reports_a_closed_connection() -> None:
    expected = r"closed the connection \(1011 boom\) while waiting for the recording state"
    with tiny_server("hangup") as server, pytest.raises(TalkError, match=expected):
        await talk(server.url, b"")


def test_cli_talk_prints_the_turn_and_saves_the_reply(
    question: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reply.wav"
    with tiny_server() as server:
        code = main(["talk", "--wav", str(question), "--out", str(out), "--url", server.url])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "you: Hello there.",
        "agent: Hi you.",
        f"audio: 0.16 s (7680 bytes) -> {out}",
        "voice-to-voice: 412 ms (stt 120, llm first token 80, tts first audio 150)",
    ]
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.readframes(wav.getnframes()) == REPLY_PCM
    assert out.read_bytes() == pcm_to_wav(REPLY_PCM)


def test_cli_talk_json(question: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_server() as server:
        assert main(["talk", "--wav", str(question), "--url", server.url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transcript"] == "Hello there."
    assert summary["reply"] == "Hi you."
    assert summary["audio_bytes"] == len(REPLY_PCM)
    assert summary["error"] is None
    assert summary["metrics"]["voice_to_voice_ms"] == 412


def test_cli_talk_server_error_exits_1(question: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_server("error") as server:
        code = main(["talk", "--wav", str(question), "--url", server.url, "--json"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err == "error provider-auth (stt): The provider rejected the API key.\n"
    summary = json.loads(captured.out)
    assert summary["error"]["code"] == "provider-auth"
    assert summary["metrics"] is None


def test_cli_talk_cannot_connect_exits_2(
    question: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    assert main(["talk", "--wav", str(question), "--url", url]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"voice-fsm: cannot connect to {url}")
    assert len(captured.err.splitlines()) == 1
    assert captured.out == ""


def test_cli_talk_refused_exits_2(question: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_server("refuse") as server:
        assert main(["talk", "--wav", str(question), "--url", server.url]) == 2
    expected = f"voice-fsm: {server.url} refused the WebSocket connection: HTTP 404\n"
    assert capsys.readouterr().err == expected


def test_cli_talk_bad_wav_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"RIFF")
    assert main(["talk", "--wav", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"voice-fsm: cannot read {path} as a WAV file: a RIFF file cut short, or one that holds "
        "something else than WAVE audio\n"
    )


def test_serve_warns_about_a_misspelt_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("export VOICE_FSM_TTS__VIOCE=verse\n")
    done = run_serve(tmp_path, VOICE_FSM_LLM__MODLE="x", VOICE_FSM_STT__PROVIDER="openai")
    assert done.returncode == 2  # no key for the openai provider: it stops after the warning
    warning = next(line for line in done.stdout.splitlines() if "settings.unknown" in line)
    assert "VOICE_FSM_LLM__MODLE" in warning
    assert "VOICE_FSM_TTS__VIOCE" in warning


# ---------------------------------------------------------------- talk: the WAV formats it reads


def riff_wav(
    frames: bytes, *, tag: int, channels: int, rate: int, bits: int, extensible: bool = False
) -> bytes:
    """A WAV file with any fmt chunk, as other programs write them (float, 24-bit,
    WAVE_FORMAT_EXTENSIBLE), which Python's wave module does not write or read."""
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits
    )
    if extensible:  # cbSize, valid bits, channel mask, the sub-format GUID
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + KSDATAFORMAT_TAIL
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\0"  # an odd chunk, padded
    chunks += b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


KSDATAFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def encode(samples: np.ndarray, tag: int, bits: int) -> bytes:
    """Interleaved frames of float samples in [-1, 1] as `bits`-bit integer PCM or float."""
    if tag == 3:
        return samples.astype(f"<f{bits // 8}").tobytes()
    if bits == 8:
        return (samples * 127 + 128).round().astype(np.uint8).tobytes()
    ints = (samples.astype(np.float64) * (2 ** (bits - 1) - 1)).round().astype("<i4")
    return bytes(ints.view(np.uint8).reshape(-1, 4)[:, : bits // 8].tobytes())  # low bytes


@pytest.mark.parametrize(
    ("tag", "bits", "channels", "rate", "extensible"),
    [
        pytest.param(3, 32, 1, 24_000, False, id="float32"),
        pytest.param(3, 64, 1, 16_000, False, id="float64-16k"),
        pytest.param(3, 32, 2, 48_000, True, id="float32-stereo-48k-extensible"),
        pytest.param(1, 8, 1, 8_000, False, id="8-bit-8k"),
        pytest.param(1, 24, 2, 44_100, False, id="24-bit-stereo-44k"),
        pytest.param(1, 32, 1, 24_000, False, id="32-bit"),
        pytest.param(1, 16, 2, 22_050, True, id="16-bit-stereo-extensible"),
    ],
)
def test_load_wav_converts_other_formats_to_pcm16_24k_mono(
    tmp_path: Path, tag: int, bits: int, channels: int, rate: int, extensible: bool
) -> None:
    mono = tone(0.5, rate, 300.0)
    samples = np.repeat(mono[:, None], channels, axis=1).reshape(-1)
    path = tmp_path / "q.wav"
    frames = encode(samples, tag, bits)
    path.write_bytes(
        riff_wav(frames, tag=tag, channels=channels, rate=rate, bits=bits, extensible=extensible)
    )
    pcm = load_wav(path)
    assert len(pcm) == 24_000  # half a second of 24 kHz PCM16
    got = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767
    expected = tone(0.5, 24_000, 300.0)
    middle = slice(1000, -1000)  # away from the resampler's edges
    worst = float(np.max(np.abs(got[middle] - expected[middle])))
    assert worst < (0.02 if bits == 8 else 0.002), worst


@pytest.mark.parametrize(
    ("tag", "bits", "named"),
    [
        (6, 8, "A-law samples are not read"),
        (2, 4, "ADPCM samples are not read"),
        (1, 12, "12-bit integer PCM samples are not read"),
        (3, 16, "16-bit float samples are not read"),
    ],
)
def test_load_wav_refuses_other_encodings_with_the_formats_it_reads(
    tmp_path: Path, tag: int, bits: int, named: str
) -> None:
    path = tmp_path / "q.wav"
    path.write_bytes(riff_wav(bytes(400), tag=tag, channels=1, rate=8000, bits=bits))
    with pytest.raises(TalkError) as caught:
        load_wav(path)
    assert (
        str(caught.value) == f"cannot read {path} as a WAV file: {named}; this reads {WAV_FORMATS}"
    )


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"ID3\x04\x00" + bytes(100), "it is an MP3 file, not WAV: convert it first, e.g. ffmpeg"),
        (b"OggS\x00\x02" + bytes(100), "it is an Ogg file (Vorbis or Opus), not WAV: convert it"),
        (b"fLaC" + bytes(100), "it is a FLAC file, not WAV"),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(100), "it is an MP4 or M4A file, not WAV"),
        (b"", "the file is empty"),
        (bytes(range(256)), "it is not a WAV file (it does not start with RIFF....WAVE)"),
        (b"RIFF\x04\x00\x00\x00WAVE", "a WAV file without a fmt chunk"),
    ],
)
def test_a_file_that_is_not_a_wav_gets_the_reason(tmp_path: Path, head: bytes, reason: str) -> None:
    path = tmp_path / "question.audio"
    path.write_bytes(head)
    with pytest.raises(TalkError) as caught:
        load_wav(path)
    assert str(caught.value).startswith(f"cannot read {path} as a WAV file: {reason}")


def test_talk_help_says_which_formats_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["talk", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert (
        "8, 16, 24 or 32-bit integer PCM or 32 or 64-bit float samples, at any sample rate" in text
    )
    assert "VOICE_FSM_PORT" in text  # where the default URL comes from


# ---------------------------------------------------------------- talk: the URL


@pytest.mark.parametrize(
    "given", ["http://127.0.0.1:{port}", "127.0.0.1:{port}", "ws://127.0.0.1:{port}/"]
)
def test_talk_fixes_up_the_page_address_and_says_so(
    question: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    with tiny_server() as server:
        port = server.url.split(":")[2].split("/")[0]
        assert main(["talk", "--wav", str(question), "--url", given.format(port=port)]) == 0
    assert [request.path for request in server.requests] == ["/ws"]
    assert capsys.readouterr().err == (
        f"voice-fsm: using ws://127.0.0.1:{port}/ws (the server's WebSocket is at /ws)\n"
    )


def test_talk_to_https_means_wss() -> None:
    assert websocket_url("https://voice.example.com") == (
        "wss://voice.example.com/ws",
        "using wss://voice.example.com/ws (the server's WebSocket is at /ws)",
    )
    assert websocket_url("wss://voice.example.com/ws?token=abc") == (
        "wss://voice.example.com/ws?token=abc",
        None,
    )


def test_a_404_on_another_path_hints_at_ws(
    question: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tiny_server("refuse") as server:
        url = server.url.removesuffix("/ws") + "/socket"
        assert main(["talk", "--wav", str(question), "--url", url]) == 2
    assert capsys.readouterr().err == (
        f"voice-fsm: {url} refused the WebSocket connection: HTTP 404 (the server's WebSocket "
        "is at /ws)\n"
    )


# ---------------------------------------------------------------- talk: .env


def run_talk_in(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`voice-fsm talk` as a user types it in `workdir`, with no --url."""
    question = workdir / "question.wav"
    write_wav(question, tone(0.3, 16_000), 16_000)
    return subprocess.run(
        [console_script(), "talk", "--wav", str(question), "--json", *args],
        env=clean_env(**env),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_talk_finds_the_server_from_dot_env_as_serve_does(tmp_path: Path) -> None:
    with tiny_server() as server:
        port = server.url.split(":")[2].split("/")[0]
        # A wildcard host is reached on loopback; the key in .env is the server's, not sent.
        (tmp_path / ".env").write_text(
            f"VOICE_FSM_HOST=0.0.0.0\nexport VOICE_FSM_PORT={port}\n"
            "VOICE_FSM_AUTH__API_KEYS=server-secret-in-dotenv\n"
        )
        done = run_talk_in(tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["reply"] == "Hi you."
        assert "authorization" not in server.requests[-1].headers

        # The environment wins over .env, as for serve; a key given there is sent.
        done = run_talk_in(
            tmp_path, VOICE_FSM_PORT="1", VOICE_FSM_AUTH__API_KEYS="k-env-0123456789abcdef"
        )
        assert done.returncode == 2
        assert done.stderr.startswith("voice-fsm: cannot connect to ws://127.0.0.1:1/ws")
        done = run_talk_in(
            tmp_path, VOICE_FSM_PORT=port, VOICE_FSM_AUTH__API_KEYS="k-env-0123456789abcdef"
        )
        assert done.returncode == 0, done.stderr
        assert server.requests[-1].headers["authorization"] == "Bearer k-env-0123456789abcdef"
    assert "secret" not in done.stdout + done.stderr


def test_talk_reports_a_bad_port_in_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VOICE_FSM_PORT=eighty\n")
    done = run_talk_in(tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "voice-fsm: invalid setting VOICE_FSM_PORT: Input should be a valid integer"
    )


def test_a_401_says_where_talk_takes_its_key(
    question: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tiny_server("refuse-401") as server:
        assert main(["talk", "--wav", str(question), "--url", server.url]) == 2
    err = capsys.readouterr().err
    assert (
        "HTTP 401 (a key is needed: --api-key, or the VOICE_FSM_AUTH__API_KEYS environment" in err
    )
    assert "talk does not take keys from .env" in err


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("localhost", "localhost"),
        ("192.168.1.20", "192.168.1.20"),
    ],
)
def test_client_host(host: str, expected: str) -> None:
    assert client_host(host) == expected
