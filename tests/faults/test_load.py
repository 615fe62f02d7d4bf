"""Concurrent admin clients (a short version of bench/load.py): no error but the documented ones."""

from __future__ import annotations

import os

import pytest
from bench.load import run_load

from shoal.errors import CATALOGUE
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("cli", [True, False], ids=["cli-processes", "sdk-clients-split-cores"])
def test_concurrent_clients_get_no_undocumented_errors(federation: Federation, cli: bool) -> None:
    """Real CLI processes back to back; or SDK clients (a connection per call) with the server's
    tree on one core and the clients and sites on the other, as ``make bench`` measures it."""
    everywhere = os.sched_getaffinity(0)
    result = run_load(federation.cli.env(), clients=8, seconds=4, cli=cli, think=0 if cli else 0.2)
    summary = result.summary()
    assert result.operations >= 8, summary  # every client got answers; throughput is bench work
    assert set(result.errors) <= set(CATALOGUE), summary
    assert not result.errors, summary  # on an idle federation nothing should fail at all
    assert "submit" in result.latencies and len(result.latencies) >= 2, summary  # reads and writes
    assert os.sched_getaffinity(0) == everywhere  # the split is undone for the tests after this one
