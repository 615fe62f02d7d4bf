"""End-to-end tests share the session federation defined in tests/conftest.py."""

from tests.federation import Federation, start_federation, stop_federation

__all__ = ["Federation", "start_federation", "stop_federation"]
