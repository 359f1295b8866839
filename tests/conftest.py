"""Shared by every test module.

pytest puts this folder on sys.path, so tests import session_harness and support directly.
"""
