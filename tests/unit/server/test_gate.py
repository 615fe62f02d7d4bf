"""The gate's count of open connections per peer address (the sockets are tested for real in
tests/security/test_connection_limits.py)."""

from __future__ import annotations

import logging

import pytest

from shoal.server.gate import ConnectionGate


def test_a_peer_is_admitted_up_to_the_cap_and_again_once_one_closes(caplog: pytest.LogCaptureFixture) -> None:
    gate = ConnectionGate(cap=2)
    with caplog.at_level(logging.WARNING, logger="shoal.server"):
        assert gate.admit("10.0.0.1") and gate.admit("10.0.0.1")
        assert not gate.admit("10.0.0.1") and not gate.admit("10.0.0.1")
        assert gate.admit("10.0.0.2"), "another address has its own count"
        gate.release("10.0.0.1")
        assert gate.admit("10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == [
        "refusing connections from 10.0.0.1: it holds 2 open (the cap)"
    ], "one line per address, not one per refused socket"
    for _ in range(3):
        gate.release("10.0.0.1")
    gate.release("10.0.0.2")
    assert gate.open == {}, "released addresses leave nothing behind"
