"""A site's own policy: no custom code, only some studies, no log streaming; each refusal is
reported in the job's meta."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import copy_hello

pytestmark = pytest.mark.e2e

STRICT = {"allow_custom_code": False, "allow_log_streaming": False, "studies": ["default"]}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(
        tmp_path_factory.mktemp("policy"),
        studies={"cancer": {"sites": ["site-1", "site-2"], "admins": [], "orgs": []}},
        site_local={"site-2": {"site_policy.json": STRICT}},
    )
    try:
        yield federation
    finally:
        stop_federation(federation)


def echo_job(dest: Path, min_clients: int = 2, meta: dict[str, object] | None = None) -> Path:
    copy_hello(dest)
    (dest / "app" / "config" / "config_fed_client.json").write_text(
        json.dumps({"module": "shoal.fl.clients.echo"})
    )
    data = json.loads((dest / "meta.json").read_text())
    data.update({"min_clients": min_clients, **(meta or {})})
    (dest / "meta.json").write_text(json.dumps(data))
    return dest


def test_custom_code_refused_by_site_policy(fed: Federation) -> None:
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = fed.cli.json("job", "meta", doc["data"]["job_id"])
    meta = doc["data"]
    assert "forbids custom code" in meta["status_reason"]
    assert meta["first_error"]["site"] == "site-2"


def test_built_in_client_runs_where_custom_code_is_forbidden(fed: Federation, tmp_path: Path) -> None:
    code, doc = fed.cli.json("job", "submit", "-j", echo_job(tmp_path / "echo"), "--wait", "--timeout", "60")
    assert code == 0, doc
    code, doc = fed.cli.json("job", "logs", doc["data"]["job_id"], "--site", "site-2")
    assert "echo round 4" in doc["data"]["logs"]["site-2"]


def test_site_serves_only_its_studies(fed: Federation, tmp_path: Path) -> None:
    job = echo_job(tmp_path / "one", min_clients=1)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--study", "cancer", "--wait", "--timeout", "60")
    assert code == 0, doc
    code, doc = fed.cli.json("job", "meta", doc["data"]["job_id"], "--study", "cancer")
    assert set(doc["data"]["progress"]["sites"]) == {"site-1"}
    two = echo_job(tmp_path / "two", min_clients=2)
    code, doc = fed.cli.json("job", "submit", "-j", two, "--study", "cancer")
    job_id = doc["data"]["job_id"]
    code, doc = fed.cli.json("job", "meta", job_id, "--study", "cancer")
    assert doc["data"]["status"] == "SUBMITTED" and "waiting for sites" in doc["data"]["status_reason"]
    fed.cli.json("job", "abort", job_id, "--study", "cancer", "--force")


def test_log_streaming_refusal_is_reported(fed: Federation, tmp_path: Path) -> None:
    job = echo_job(tmp_path / "stream", meta={"log_streaming": True})
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 0, doc
    code, doc = fed.cli.json("job", "meta", doc["data"]["job_id"])
    assert any("site-2" in n and "log streaming refused" in n for n in doc["data"]["notices"]), doc["data"]


def test_a_site_forbidding_custom_code_runs_no_shoal_module_but_its_clients(
    fed: Federation, tmp_path: Path
) -> None:
    """Issue 13 finding 2: any "module" under ``shoal.`` passed for built-in, and the controller's
    entry point loads a workflow class from the job's own custom/ folder. Only shoal's training
    clients run where custom code is forbidden."""
    job = echo_job(tmp_path / "job", min_clients=1, meta={"deploy_map": {"app": ["server", "site-2"]}})
    (job / "app" / "config" / "config_fed_client.json").write_text(
        json.dumps(
            {"module": "shoal.runtime.controller", "args": "--job-id 1 --app-dir . --run-dir . --workspace ."}
        )
    )
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = fed.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert error["site"] == "site-2" and "not one of shoal's built-in clients" in error["message"], error
