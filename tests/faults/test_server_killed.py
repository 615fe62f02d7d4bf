"""The server is SIGKILLed at random points, again and again: nothing accepted is lost.

After every restart: each job whose submit was acknowledged is in the store, each submit-token
record answers, stored logs are still there, jobs that were running resume from their last
finished round and finish (FedAvg: with the model an uninterrupted run gives), a workflow that
cannot resume ends ABANDONED with a reason, sites reconnected on their own, and SQLite passes
``PRAGMA integrity_check``. Once more on PostgreSQL.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.store.choice import open_job_store
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import paced_hello, slow_job
from tests.federation import CUSTOM_CODE_STUDIES, CUSTOM_CODE_STUDY, alive

pytestmark = pytest.mark.e2e
KILLS = int(os.environ.get("SHOAL_FAULT_KILLS", "20"))
TERMINAL = {"FINISHED_OK", "FINISHED_EXCEPTION", "FAILED", "ABORTED", "ABANDONED"}


RESTARTED: list[subprocess.Popen[bytes]] = []
#: The reasons a job that was running may still end ABANDONED with after a restart: it had not
#: started (DISPATCHED), or its workflow had not yet said whether it can resume.
NOT_YET_RESUMABLE = (
    "the server restarted while the job was running",
    "the server restarted while the job was running, before its workflow said whether it can resume",
)


@pytest.fixture(params=["sqlite"])
def fed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Federation]:
    env: dict[str, str] = {}
    if request.param == "postgres":
        env["SHOAL_STORE_URL"] = request.getfixturevalue("postgres").new_database()
    federation = start_federation(tmp_path / "home", studies=CUSTOM_CODE_STUDIES, env=env)
    try:
        yield federation
    finally:
        stop_restarted(federation)
        stop_federation(federation)


def stop_restarted(fed: Federation) -> None:
    """Stop and reap the servers ``restart_server`` started (our own children: ``poc stop``
    knows only the ones it started), and forget them."""
    for proc in RESTARTED:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    RESTARTED.clear()
    pids_file = fed.workspace / "run" / "pids.json"
    pids = json.loads(pids_file.read_text())
    pids.pop("restarted", None)
    pids_file.write_text(json.dumps(pids))


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
    with (fed.workspace / "logs" / "server.log").open("ab") as log:  # the child keeps its own copy
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
    # Dozens of CLI calls, each its own process: a few at a time (the answers are checked here,
    # one by one, as before).
    with ThreadPoolExecutor(max_workers=4) as pool:
        by_token = dict(zip(accepted, pool.map(submitted_with, [fed] * len(accepted), accepted), strict=True))
        waited = dict(zip(listed, pool.map(waited_for, [fed] * len(listed), listed), strict=True))
    for token, job_id in accepted.items():
        code, doc = by_token[token]
        assert code == 0 and [r["job_id"] for r in doc["data"]] == [job_id], (token, doc)

    # every job reaches a terminal status with a reason; none is left dangling, and every job
    # whose workflow had said it can resume (all of these are FedAvg) finished
    for job_id in listed:
        code, doc = waited[job_id]
        meta = doc["data"]["job_meta"] if code in (0, 1) else doc
        assert code in (0, 1), doc
        assert meta["status"] in TERMINAL and meta.get("status_reason"), meta
        assert meta["status"] in ("FINISHED_OK", "ABANDONED"), meta
        if meta["status"] == "ABANDONED":
            assert meta["status_reason"] in NOT_YET_RESUMABLE, meta

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


def submitted_with(fed: Federation, token: str) -> tuple[int, Any]:
    """``job list --submit-token``: the jobs the server holds for ``token``."""
    return fed.cli.json("job", "list", "--submit-token", token)


def waited_for(fed: Federation, job_id: str) -> tuple[int, Any]:
    """``job wait``: the job once it ended (two minutes at most)."""
    return fed.cli.json("job", "wait", job_id, "--timeout", "120")


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


ENDLESS_WORKFLOW = """
from shoal.fl.model import FLModel
from shoal.workflows.base import Workflow


class Endless(Workflow):
    # resumable is left False, as for any workflow that does not say otherwise
    def run(self) -> None:
        model = FLModel(params={})
        rnd = 0
        while True:
            for _site, update in self.collect("train", model, round_number=rnd):
                model = FLModel(params=dict(update.params))
            self.ctx.record_round(rnd, {}, self.ctx.sites)
            rnd += 1
"""


def test_a_workflow_that_cannot_resume_is_abandoned_and_its_site_processes_killed(
    fed: Federation, tmp_path: Path
) -> None:
    """A custom workflow that does not say it can resume: the kill lands while it runs, the
    job ends ABANDONED saying its workflow cannot resume, and the sites kill its processes once
    the restarted server, which does not run it, hears of it."""
    job = slow_job(tmp_path / "job", rounds=1, delay=0.05)
    (job / "app" / "custom" / "client.py").write_text(PID_CLIENT)
    (job / "app" / "custom" / "endless.py").write_text(ENDLESS_WORKFLOW)
    server_cfg = {"workflow": {"class": "endless.Endless"}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server_cfg))
    code, doc = fed.cli.json("job", "submit", "-j", job, "--study", CUSTOM_CODE_STUDY)
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
    code, doc = fed.cli.json("job", "meta", job_id, "--study", CUSTOM_CODE_STUDY)
    assert doc["data"]["status"] == "RUNNING", doc

    kill_server(fed)
    restart_server(fed)

    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "60", "--study", CUSTOM_CODE_STUDY)
    assert code == 1 and doc["data"]["status"] == "ABANDONED", doc
    assert doc["data"]["job_meta"]["status_reason"] == (
        "the server restarted while the job was running; its workflow Endless cannot resume"
    )
    deadline = time.monotonic() + 30
    while left := {site: pid for site, pid in scripts.items() if alive(pid)}:
        assert time.monotonic() < deadline, f"job processes outlived the job on their sites: {left}"
        time.sleep(0.05)


def rounds_done(fed: Federation, job_id: str) -> int:
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    progress = doc["data"].get("progress") or {}
    return int((progress.get("stats") or {}).get("rounds_done") or 0)


def checkpointed_round(fed: Federation, job_id: str) -> int:
    """The last round whose checkpoint the server's store holds (-1 before the first), read from
    the store itself (SQLite in the server kit, or the PostgreSQL of SHOAL_STORE_URL)."""
    store, _ = open_job_store(fed.kits / "server" / "workspace", fed.cli.extra_env.get("SHOAL_STORE_URL"))
    try:
        checkpoint = store.get_checkpoint(int(job_id))
    finally:
        store.close()
    return -1 if checkpoint is None or checkpoint.last_round is None else checkpoint.last_round


def final_model(fed: Federation, job_id: str, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's global model and metrics_summary.json, downloaded."""
    code, doc = fed.cli.json("job", "download", job_id, "-o", dest)
    assert code == 0, doc
    workspace = dest / job_id / "workspace"
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    return dict(load_file(str(workspace / "FL_global_model.safetensors"))), summary


@pytest.mark.parametrize("fed", ["sqlite", "postgres"], indirect=True)
def test_a_running_fedavg_job_resumes_from_its_last_round_with_the_same_model(
    fed: Federation, tmp_path: Path
) -> None:
    """hello-numpy over 8 rounds, once without a break and once with the server SIGKILLed after
    its third round: the second resumes from its last finished round, runs each round once,
    says so in its history, and ends with the first one's model."""
    job = paced_hello(tmp_path / "job", rounds=8, delay=0.25)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0, doc
    want, _ = final_model(fed, doc["data"]["job_id"], tmp_path / "plain")

    code, doc = fed.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    deadline = time.monotonic() + 60
    # The checkpoint is stored beside the next round (decisions/0040): on a loaded machine it
    # may trail the rounds done, so the kill waits for a stored one past the first round.
    held = -1
    while rounds_done(fed, job_id) < 3 or (held := checkpointed_round(fed, job_id)) < 2:
        assert time.monotonic() < deadline, "the job never checkpointed its third round"
        time.sleep(0.05)
    kill_server(fed)
    restart_server(fed)
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc

    got, summary = final_model(fed, job_id, tmp_path / "resumed")
    assert set(got) == set(want)
    for name in want:  # the same rounds from the same models: equal but for the order of a sum
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12)
    assert [r["round"] for r in summary["rounds"]] == list(range(8)), summary["rounds"]
    assert len(summary["restarts"]) == 1 and summary["restarts"][0]["after_round"] >= held, summary
    code, doc = fed.cli.json("job", "meta", job_id)
    assert "resumed after round" in json.dumps(doc["data"].get("notices", [])), doc
