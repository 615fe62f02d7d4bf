"""A site's own ``/metrics`` (docs/observability.md, decisions/0030): off by default, on its
host's loopback when ``local/metrics.json`` asks, and its counters move as a real job does,
ending equal to what the server counted for that site."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.jobs import slow_job
from tests.federation import Federation, own_federation
from tests.prometheus import Samples, scrape_url

pytestmark = pytest.mark.e2e

ROUNDS = 4


def site_url(fed: Federation, site: str) -> str:
    written = fed.kits / site / "workspace" / "metrics_address.json"
    url: str = json.loads(written.read_text())["url"]
    assert url.startswith("http://127.0.0.1:"), url
    return url


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, (key, sorted(samples))
    return samples[key]


def site_stats(fed: Federation, job_id: str) -> dict[str, object]:
    code, doc = fed.cli.json("job", "stats", job_id)
    assert code == 0, doc
    data: dict[str, object] = doc["data"]
    return data


def test_a_sites_counters_move_as_its_job_runs(tmp_path: Path) -> None:
    local = {"site-1": {"metrics.json": {"port": 0}}}  # site-2 says nothing: it serves nothing
    with own_federation(tmp_path / "fed", site_local=local) as fed:
        assert not (fed.kits / "site-2" / "workspace" / "metrics_address.json").exists()
        url = site_url(fed, "site-1")
        before = scrape_url(url)
        assert value(before, "shoal_site_info", site="site-1") == 1
        assert (
            value(before, "shoal_site_connected") == 1 and value(before, "shoal_site_reconnects_total") == 0
        )
        for name in ("jobs_started", "tasks_received", "results_sent", "metrics_logged"):
            assert value(before, f"shoal_site_{name}_total") == 0, name
        assert value(before, "shoal_site_jobs_running") == 0

        job = slow_job(tmp_path / "job", rounds=ROUNDS, delay=0.6)
        code, doc = fed.cli.json("job", "submit", "-j", job)
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        deadline = time.monotonic() + 120
        while True:  # until two rounds are done, the job still running
            stats = site_stats(fed, job_id)
            if stats["server"]["rounds_done"] >= 2:  # type: ignore[index]
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
        during = scrape_url(url)
        assert value(during, "shoal_site_jobs_started_total") == 1
        assert value(during, "shoal_site_jobs_running") == 1
        assert 2 <= value(during, "shoal_site_tasks_received_total") < ROUNDS + 1
        assert 2 <= value(during, "shoal_site_results_sent_total") < ROUNDS
        assert value(during, "shoal_site_metrics_logged_total") >= 2
        assert value(during, "shoal_site_transfer_bytes_total", direction="from_server") > 0

        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0, doc
        after = scrape_url(url)
        counted = site_stats(fed, job_id)["sites"]["site-1"]  # type: ignore[index]
    assert value(after, "shoal_site_jobs_started_total") == 1
    assert value(after, "shoal_site_jobs_running") == 0
    assert value(after, "shoal_site_tasks_received_total") == counted["tasks"] == ROUNDS
    assert value(after, "shoal_site_results_sent_total") == counted["results"] == ROUNDS
    assert value(after, "shoal_site_metrics_logged_total") == ROUNDS  # one step_loss a round
    moved = {
        d: value(after, "shoal_site_transfer_bytes_total", direction=d) for d in ("from_server", "to_server")
    }
    assert moved == {"from_server": counted["bytes_to_site"], "to_server": counted["bytes_from_site"]}, (
        counted
    )
    assert value(after, "shoal_site_connected") == 1 and value(after, "shoal_site_reconnects_total") == 0
