"""A site dies mid-round: the job goes on if enough sites remain, fails fast (naming the site) if
not, and a site that comes back rejoins the next round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import slow_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = start_federation(tmp_path / "home", sites=3)
    try:
        yield federation
    finally:
        stop_federation(federation)


def kill_site(fed: Federation, site: str) -> None:
    pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
    os.killpg(pids[site], signal.SIGKILL)


def running_round(fed: Federation, job_id: str, at_least: int = 0) -> int:
    deadline = time.monotonic() + 30
    while True:
        code, doc = fed.cli.json("job", "meta", job_id)
        progress = doc["data"].get("progress") or {}
        rnd = progress.get("current_round")
        if rnd is not None and rnd >= at_least:
            return int(rnd)
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)


def test_round_completes_without_a_dead_site_when_enough_remain(fed: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=30, delay=0.05, meta={"min_clients": 2})
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    running_round(fed, job_id, at_least=2)
    kill_site(fed, "site-3")
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0, doc
    code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    summary = json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())
    assert summary["rounds"][0]["sites"] == ["site-1", "site-2", "site-3"]
    assert summary["rounds"][-1]["sites"] == ["site-1", "site-2"]


def test_job_fails_fast_naming_the_site_when_too_few_remain(fed: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=1000, delay=0.05, meta={"min_clients": 3})
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    running_round(fed, job_id, at_least=1)
    killed = time.monotonic()
    kill_site(fed, "site-2")
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "60")
    assert time.monotonic() - killed < 15
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = fed.cli.json("job", "meta", job_id)
    assert "site-2" in doc["data"]["status_reason"]
    assert doc["data"]["first_error"]["site"] == "site-2"


def test_a_site_that_comes_back_rejoins(fed: Federation, tmp_path: Path) -> None:
    # Rounds enough that the job still runs when the restarted site is back, many times over
    # (no round closes during the reconnect grace; the site rejoined within a dozen rounds of
    # its start with a load of 18 on 2 cores); the rest only run the job out.
    job = slow_job(tmp_path / "job", rounds=150, delay=0.02, meta={"min_clients": 2})
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    running_round(fed, job_id, at_least=1)
    kill_site(fed, "site-3")
    # rounds go on without it before it comes back: two close after the kill
    running_round(fed, job_id, at_least=running_round(fed, job_id) + 2)
    with (fed.workspace / "logs" / "site-3.log").open("ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / "site-3"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=fed.cli.env(),
        )
    try:
        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0, doc
        code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
        rounds = json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())["rounds"]
        without = [r["round"] for r in rounds if "site-3" not in r["sites"]]
        assert without, "site-3 was never missing"
        assert "site-3" in rounds[-1]["sites"], rounds[-1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
