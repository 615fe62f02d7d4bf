"""`poc stop` and `poc start` on a POC of this test's own (it is stopped and started again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.server.app import SHUTDOWN_GRACE
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import slow_job
from tests.federation import server_address, wait_connected

pytestmark = pytest.mark.e2e


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its parent (init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


def test_stop_while_a_job_runs_and_a_wait_is_attached(tmp_path: Path) -> None:
    """Stop ends with everything gone, exit 0, and the POC starts again (it used to exit 2 "still
    running after SIGKILL", then start refused). The server leaves on SIGTERM: the open wait is
    answered with the job's end (ABANDONED) instead of holding the shutdown past the grace."""
    fed: Federation = start_federation(tmp_path / "home")
    waiter: subprocess.Popen[str] | None = None
    try:
        pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
        code, doc = fed.cli.json("job", "submit", "-j", slow_job(tmp_path / "job", rounds=100000, delay=0.05))
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        deadline = time.monotonic() + 60
        while fed.cli.json("job", "meta", job_id)[1]["data"]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        waiter = subprocess.Popen(
            [sys.executable, "-m", "shoal", "job", "wait", job_id, "--format", "json"],
            env=fed.cli.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_connected(waiter.pid, server_address(fed)[1])  # the wait is talking to the server
        start = time.monotonic()
        code, doc = fed.cli.json("poc", "stop", "--workspace", fed.workspace, timeout=120)
        assert code == 0, doc
        assert doc["data"]["stopped"] == ["server", "site-1", "site-2"]
        assert doc["data"]["killed"] == [] and time.monotonic() - start < 8, doc  # SIGTERM was enough
        assert all(gone(pid) for pid in pids.values()), pids
        assert not (fed.workspace / "run" / "pids.json").exists()
        out, _ = waiter.communicate(timeout=60)
        # The server ended the job as it went and told the wait, which held its shutdown open.
        assert waiter.returncode == 1 and json.loads(out)["data"]["status"] == "ABANDONED", out
        code, doc = fed.cli.json("poc", "start", "--workspace", fed.workspace, "--timeout", "0")
        assert code == 0 and doc["data"]["status"] == "running", doc  # 0: no limit
    finally:
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        stop_federation(fed)


def test_a_server_stopped_while_its_sites_are_connected_leaves_at_once(tmp_path: Path) -> None:
    """SIGTERM to the server alone (a restart, a rolling upgrade) while both sites hold their
    control channels: it closes them (going away) and exits well within its grace. Left to
    aiohttp's shutdown, each open channel held the stop for the grace twice over (4 s)."""
    fed = start_federation(tmp_path / "home")
    try:
        deadline = time.monotonic() + 30
        while len(fed.cli.json("system", "status")[1]["data"]["sites"]) < 2:
            assert time.monotonic() < deadline, "the sites never connected"
            time.sleep(0.1)
        server = int(json.loads((fed.workspace / "run" / "pids.json").read_text())["server"])
        start = time.monotonic()
        os.killpg(server, signal.SIGTERM)
        while not gone(server):
            assert time.monotonic() - start < SHUTDOWN_GRACE, "the open site channels held the stop"
            time.sleep(0.02)
        log = (fed.workspace / "logs" / "server.log").read_text().split("shutting down", 1)[1]
        assert "site site-1 disconnected" in log and "site site-2 disconnected" in log, log
    finally:
        stop_federation(fed)
