"""Adapters for OpenAI's API (and compatible servers): the Speech, Chat and transcription
APIs over HTTP, and the Realtime API over WebSockets."""
