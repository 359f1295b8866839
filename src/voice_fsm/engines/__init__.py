"""`voice-fsm engines`: the embedded engines (Whisper, llama.cpp, Piper) loaded once in a
process of their own and served over the OpenAI HTTP API, so that any number of `voice-fsm
serve` processes share them by base URL (provider ``openai``, ``VOICE_FSM_*__BASE_URL``).
See docs/engines.md."""
