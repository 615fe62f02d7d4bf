"""Federated statistics end to end: examples/fedstats on the POC federation and in the simulator
gives numpy's statistics of the pooled rows of the sites above the threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import EXAMPLES, Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import export_recipe

pytestmark = pytest.mark.e2e

FEDSTATS = EXAMPLES / "fedstats"
FEATURES = ["age", "bmi", "glucose"]
BINS = 10


def export(dest: Path) -> Path:
    return export_recipe(FEDSTATS / "job.py", dest)


def pooled(sites: list[str]) -> np.ndarray:
    """The sites' rows together, read here independently of shoal's reader."""
    tables = []
    for site in sites:
        path = FEDSTATS / "data" / f"{site}.csv"
        assert path.read_text().splitlines()[0].split(",") == FEATURES
        tables.append(np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2))
    return np.concatenate(tables)


def assert_matches_numpy(got: dict[str, Any], rows: np.ndarray) -> None:
    assert got["features"] == FEATURES
    for j, name in enumerate(FEATURES):
        col = rows[:, j]
        g = got["global"][name]
        assert g["count"] == len(col)
        assert g["sum"] == pytest.approx(col.sum(), rel=1e-12)
        assert g["mean"] == pytest.approx(col.mean(), rel=1e-12)
        assert g["std"] == pytest.approx(col.std(), rel=1e-10)  # population std, ddof=0
        assert g["std_sample"] == pytest.approx(col.std(ddof=1), rel=1e-10)
        assert g["min"] == col.min() and g["max"] == col.max()
        counts, edges = np.histogram(col, bins=BINS, range=(col.min(), col.max()))
        assert g["histogram"]["counts"] == counts.tolist()
        np.testing.assert_allclose(g["histogram"]["edges"], edges, rtol=0, atol=0)


def test_fedstats_on_the_federation_and_in_the_simulator(federation: Federation, tmp_path: Path) -> None:
    job = export(tmp_path / "job")
    config = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    assert config["module"] == "shoal.fl.clients.stats" and "script" not in config
    assert (job / "app" / "custom" / "data" / "site-3.csv").is_file()

    # -- the federation: site-1 and site-2, both above the threshold ----------------------------
    cli = federation.cli
    code, doc = cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    code, doc = cli.json("job", "wait", job_id, "--timeout", "60")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    code, doc = cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    assert code == 0, doc
    summary_path = Path(doc["data"]["artifacts"]["metrics_summary"])
    summary = json.loads(summary_path.read_text())
    assert summary["workflow"] == "fedstats" and [r["round"] for r in summary["rounds"]] == [0, 1]
    fed = json.loads((summary_path.parent / "statistics.json").read_text())
    assert fed["min_count"] == 10 and sorted(fed["sites"]) == ["site-1", "site-2"]
    assert_matches_numpy(fed, pooled(["site-1", "site-2"]))
    for site, n in (("site-1", 200), ("site-2", 150)):
        own = pooled([site])
        assert fed["sites"][site]["age"]["count"] == n
        assert fed["sites"][site]["bmi"]["std"] == pytest.approx(own[:, 1].std(), rel=1e-10)

    # -- the simulator with 3 sites: site-3 has 5 rows, below min_count 10 ----------------------
    out = tmp_path / "sim"
    code, doc = Cli(home=tmp_path / "home").json("simulate", "-j", job, "-n", "3", "-o", out, timeout=60)
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    sim = json.loads((out / "workspace" / "statistics.json").read_text())
    assert sim["sites"]["site-3"] == {"withheld": True, "reason": "fewer than min_count rows"}
    assert doc["data"]["rounds"][0]["metrics"]["withheld_sites"] == 1
    assert_matches_numpy(sim, pooled(["site-1", "site-2"]))
    assert sim["global"] == fed["global"]
    assert sim["sites"]["site-1"] == fed["sites"]["site-1"]
    site3_log = (out / "workspace" / "site-3" / "log.txt").read_text()
    assert "withheld" in site3_log and "5" not in site3_log


def test_every_site_withholding_fails_the_job(tmp_path: Path) -> None:
    job = export(tmp_path / "job")
    server = job / "app" / "config" / "config_fed_server.json"
    server.write_text(json.dumps({"workflow": "fedstats", "args": {"min_count": 1000}}))
    code, doc = Cli(home=tmp_path / "home").json("simulate", "-j", job, "-n", "2", "-o", tmp_path / "out")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    assert "every site withheld" in doc["data"]["reason"]
    assert not (tmp_path / "out" / "workspace" / "statistics.json").exists()
