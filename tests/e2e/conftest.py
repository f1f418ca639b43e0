"""End-to-end tests share the session-scoped `local_stack` fixture from tests/conftest.py."""
