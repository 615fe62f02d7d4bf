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


def test_the_server_lifts_a_low_soft_file_limit() -> None:
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = "from shoal.server.app import raise_file_limit; import resource; raise_file_limit(); " + (
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    assert proc.returncode == 0, proc.stderr
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert int(proc.stdout) == max(wanted, 256)
