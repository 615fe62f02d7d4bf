"""The server's ``/metrics`` (Prometheus' text format) moves as a real job does, and only an
operator's admin certificate may read it (decisions/0024, docs/observability.md)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.security.tls import client_ssl_context
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.federation import own_federation
from tests.prometheus import Samples, scrape_url

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A federation of this module's own: the counters are the server's, and the exact moves
    checked here must not take in another test's job still running on a shared server."""
    with own_federation(tmp_path_factory.mktemp("prometheus")) as fed:
        yield fed


def metrics_url(fed: Federation) -> str:
    admin = json.loads((fed.kits / "admin@example.com" / "startup" / "fed_admin.json").read_text())
    return f"https://{admin['server']['host']}:{admin['server']['port']}/metrics"


def scrape(fed: Federation, kit: Path | None = None) -> Samples:
    """One scrape as Prometheus makes it (client certificate, project CA), parsed by
    prometheus-client's own parser: every sample by name and labels."""
    context = client_ssl_context(kit or fed.kits / "admin@example.com")
    return scrape_url(metrics_url(fed), context=context)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_a_job_runs(federation: Federation, tmp_path: Path) -> None:
    before = scrape(federation)
    assert value(before, "shoal_sites_connected") == 2
    rounds = 6
    job = slow_job(tmp_path / "job", rounds=rounds, delay=0.4)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]

    deadline = time.monotonic() + 60
    during = scrape(federation)
    while value(during, "shoal_rounds_total") - value(before, "shoal_rounds_total") < 1:
        assert time.monotonic() < deadline, "no round was counted while the job ran"
        time.sleep(0.2)
        during = scrape(federation)
    assert value(during, "shoal_jobs", status="RUNNING") >= 1
    assert value(during, "shoal_jobs_running") >= 1
    assert value(during, "shoal_transfer_bytes_total", direction="to_sites") > value(
        before, "shoal_transfer_bytes_total", direction="to_sites"
    )

    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    after = scrape(federation)
    assert value(after, "shoal_rounds_total") - value(before, "shoal_rounds_total") == rounds
    assert value(after, "shoal_rounds_total") > value(during, "shoal_rounds_total")
    # two sites answer every round, and each logged one metric a round
    for counter in ("shoal_tasks_sent_total", "shoal_results_received_total", "shoal_metrics_logged_total"):
        assert value(after, counter) - value(before, counter) == 2 * rounds, counter
    for direction in ("to_sites", "from_sites"):
        moved = value(after, "shoal_transfer_bytes_total", direction=direction)
        assert moved > value(during, "shoal_transfer_bytes_total", direction=direction), direction
    assert (
        value(after, "shoal_jobs", status="FINISHED_OK") - value(before, "shoal_jobs", status="FINISHED_OK")
        == 1
    )
    assert value(after, "shoal_store_bytes", part="blobs") > 0
    assert value(after, "shoal_store_bytes", part="database") > 0
    # the submit and the wait were timed under their route templates, never the raw path
    submit = value(after, "shoal_request_duration_seconds_count", method="POST", route="/api/v1/jobs")
    assert (
        submit - value(before, "shoal_request_duration_seconds_count", method="POST", route="/api/v1/jobs")
        >= 1
    )
    assert not any(job_id in dict(labels).get("route", "") for _, labels in after)


def test_only_an_operator_may_scrape(federation: Federation, tmp_path: Path) -> None:
    """A site's certificate and an admin without the ``operate`` right are refused, as the
    catalogue says: counts span every study."""
    with pytest.raises(urllib.error.HTTPError) as site:
        scrape(federation, federation.kits / "site-1")
    assert site.value.code == 403 and json.loads(site.value.read())["error_code"] == "NOT_AUTHORIZED"
    proc = federation.cli.run(
        "poc",
        "add-user",
        "member",
        "scraper@example.org",
        "--org",
        "elsewhere",
        "--workspace",
        federation.workspace,
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(urllib.error.HTTPError) as member:
        scrape(federation, federation.kits / "scraper@example.org")
    assert member.value.code == 403 and json.loads(member.value.read())["error_code"] == "NOT_AUTHORIZED"
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(metrics_url(federation), context=ssl.create_default_context(), timeout=10)
