"""The server is SIGKILLed at random points, again and again: nothing accepted is lost.

After every restart: each job whose submit was acknowledged is in the store, each submit-token
record answers, stored logs are still there, jobs that were running ended ABANDONED with a
reason, sites reconnected on their own, and SQLite passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import slow_job
from tests.federation import alive

pytestmark = pytest.mark.e2e
KILLS = int(os.environ.get("SHOAL_FAULT_KILLS", "20"))
TERMINAL = {"FINISHED_OK", "FINISHED_EXCEPTION", "FAILED", "ABORTED", "ABANDONED"}


RESTARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = start_federation(tmp_path / "home")
    try:
        yield federation
    finally:
        for proc in RESTARTED:  # our own children: stop and reap them here
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        RESTARTED.clear()
        pids_file = federation.workspace / "run" / "pids.json"
        pids = json.loads(pids_file.read_text())
        pids.pop("restarted", None)
        pids_file.write_text(json.dumps(pids))
        stop_federation(federation)


def server_pid(fed: Federation) -> int:
    pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
    return int(pids.get("restarted", pids["server"]))


def kill_server(fed: Federation) -> None:
    pid = server_pid(fed)
    os.killpg(pid, signal.SIGKILL)
    for proc in RESTARTED:
        if proc.pid == pid:
            proc.wait(timeout=30)
            return
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def restart_server(fed: Federation) -> None:
    log = (fed.workspace / "logs" / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "server", "start", "-k", fed.kits / "server"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=fed.cli.env(),
    )
    RESTARTED.append(proc)
    pids_file = fed.workspace / "run" / "pids.json"
    pids = json.loads(pids_file.read_text())
    pids["restarted"] = proc.pid
    pids_file.write_text(json.dumps(pids))
    deadline = time.monotonic() + 30
    while True:
        code, doc = fed.cli.json("system", "status")
        if code == 0 and len(doc["data"]["sites"]) == 2:
            return
        assert time.monotonic() < deadline, f"server or sites did not come back: {doc}"
        time.sleep(0.05)


def test_server_sigkill_at_random_points_loses_nothing(fed: Federation, tmp_path: Path) -> None:
    rng = random.Random(1234)
    accepted: dict[str, str] = {}  # token -> job_id, only acknowledged submits
    failures: list[BaseException] = []  # what killed the submitter, if anything did
    stop = threading.Event()
    slow = slow_job(tmp_path / "slow", rounds=20, delay=0.02, meta={"log_streaming": True})

    def submitter() -> None:
        n = 0
        try:
            while not stop.is_set():
                token = f"fault-{n}"
                folder = slow if n % 2 else EXAMPLES / "hello-numpy"
                code, doc = fed.cli.json("job", "submit", "-j", folder, "--submit-token", token)
                if code == 0:
                    accepted[token] = doc["data"]["job_id"]
                n += 1
                stop.wait(0.25)
        except BaseException as exc:  # a thread's exception only warns: hand it to the test
            failures.append(exc)

    thread = threading.Thread(target=submitter, daemon=True)
    thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.8))  # the random points to kill at: not a wait
            kill_server(fed)
            restart_server(fed)
    finally:
        stop.set()
        thread.join(timeout=120)

    assert not thread.is_alive() and failures == [], failures
    assert len(accepted) >= KILLS // 2, accepted
    code, doc = fed.cli.json("job", "list")
    listed = {row["job_id"]: row for row in doc["data"]}
    for token, job_id in accepted.items():
        assert job_id in listed, f"acknowledged job {job_id} ({token}) was lost"
        code, doc = fed.cli.json("job", "list", "--submit-token", token)
        assert code == 0 and [r["job_id"] for r in doc["data"]] == [job_id], (token, doc)

    # every job reaches a terminal status with a reason; none is left dangling
    for job_id in listed:
        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        meta = doc["data"]["job_meta"] if code in (0, 1) else doc
        assert code in (0, 1), doc
        assert meta["status"] in TERMINAL and meta.get("status_reason"), meta
        if meta["status"] == "ABANDONED":
            assert "restarted" in meta["status_reason"]

    # the jobs that finished still have their stored logs
    finished = [j for j, row in listed.items() if row["status"] == "FINISHED_OK"]
    for job_id in finished[:3]:
        code, doc = fed.cli.json("job", "logs", job_id, "--site", "all")
        assert code == 0 and doc["data"]["logs"]["site-1"], doc

    # a fresh job runs on the recovered federation
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120")
    assert code == 0, doc

    db = fed.kits / "server" / "workspace" / "store.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


PID_CLIENT = """
import os, time
from pathlib import Path
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
Path("script.pid").write_text(str(os.getpid()))  # in its working folder, the one it may write
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    time.sleep(0.05)
    flare.send(FLModel(params=model.params or {"w": __import__("numpy").zeros(2)}, num_examples=1))
"""


def test_a_running_job_is_abandoned_and_its_site_processes_killed(fed: Federation, tmp_path: Path) -> None:
    """The random kills above may or may not land while a job runs; this one always does: the
    job ends ABANDONED with its reason, and the sites kill its processes once the restarted
    server, which no longer runs it, hears of it."""
    job = slow_job(tmp_path / "job", rounds=100000, delay=0.05)
    (job / "app" / "custom" / "client.py").write_text(PID_CLIENT)
    code, doc = fed.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    folders = {site: fed.kits / site / "workspace" / "jobs" / job_id for site in ("site-1", "site-2")}
    deadline = time.monotonic() + 60
    scripts: dict[str, int] = {}
    while len(scripts) < 2:  # both sites' scripts run and said who they are
        assert time.monotonic() < deadline, "the job's scripts never started"
        time.sleep(0.05)
        for site, folder in folders.items():
            written = [p.read_text() for p in folder.rglob("script.pid")]
            if written and written[0]:
                scripts[site] = int(written[0])
    assert all(alive(pid) for pid in scripts.values()), scripts
    code, doc = fed.cli.json("job", "meta", job_id)
    assert doc["data"]["status"] == "RUNNING", doc

    kill_server(fed)
    restart_server(fed)

    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "ABANDONED", doc
    assert "the server restarted while the job was running" in doc["data"]["job_meta"]["status_reason"]
    deadline = time.monotonic() + 30
    while left := {site: pid for site, pid in scripts.items() if alive(pid)}:
        assert time.monotonic() < deadline, f"job processes outlived the job on their sites: {left}"
        time.sleep(0.05)
