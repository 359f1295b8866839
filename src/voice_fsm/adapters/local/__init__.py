"""The embedded offline engines: faster-whisper, llama.cpp and Piper, in worker threads."""
