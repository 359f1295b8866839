"""Shared by every test module: pytest puts this folder on sys.path for session_harness and support."""
