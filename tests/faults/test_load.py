"""Concurrent CLI clients (a short version of bench/load.py): no error but the documented ones."""

from __future__ import annotations

import pytest
from bench.load import run_load

from shoal.errors import CATALOGUE
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e


def test_concurrent_clients_get_no_undocumented_errors(federation: Federation) -> None:
    result = run_load(federation.cli.env(), clients=8, seconds=4)
    summary = result.summary()
    assert result.operations >= 8, summary  # every client got answers; throughput is bench work
    assert set(result.errors) <= set(CATALOGUE), summary
    assert not result.errors, summary  # on an idle federation nothing should fail at all
    assert "submit" in result.latencies and len(result.latencies) >= 2, summary  # reads and writes
