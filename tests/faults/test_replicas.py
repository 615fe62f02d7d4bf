"""Two server replicas share PostgreSQL and a bucket behind HAProxy; one is SIGKILLed mid-job.

The federation: replicas A and B (one server kit, a workspace each, their own ports), HAProxy
on the port the kits dial (TCP mode, TLS passed through, ``balance first``: sites and admins
all reach A while it lives), PostgreSQL (tests/pgserver.py), a moto S3 bucket
(tests/s3server.py) and two sites. A 10-round FedAvg job runs on A; A is SIGKILLed after its
third round; B takes the job over once A's lease lapses and resumes it from its last finished
round: it finishes once, with all 10 rounds and the model of an uninterrupted run, its history
saying so, while a ``job wait`` through HAProxy sees it through (decisions/0041).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.api.client import AdminClient
from shoal.api.kits import resolve_admin_kit
from tests.conftest import Cli
from tests.e2e.jobs import paced_hello
from tests.federation import wait_connected
from tests.pgserver import PostgresServer
from tests.replicas import Replicas, replica_federation
from tests.s3server import S3Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Iterator[Replicas]:
    env = {"SHOAL_STORE_URL": postgres.new_database(), **s3.env(s3.new_bucket())}
    with replica_federation(tmp_path, env) as fed:
        yield fed


def rounds_done(cli: Cli, job_id: str) -> int:
    code, doc = cli.json("job", "meta", job_id)
    assert code == 0, doc
    return int(((doc["data"].get("progress") or {}).get("stats") or {}).get("rounds_done") or 0)


def submit_past_round(cli: Cli, job: Path, rounds: int) -> str:
    """Submit ``job`` and return its id once ``rounds`` of its rounds are done (within 60 s)."""
    code, doc = cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    deadline = time.monotonic() + 60
    while rounds_done(cli, job_id) < rounds:
        assert time.monotonic() < deadline, f"the job never finished {rounds} round(s)"
        time.sleep(0.05)
    return job_id


def final_model(cli: Cli, job_id: str, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    code, doc = cli.json("job", "download", job_id, "-o", dest)
    assert code == 0, doc
    workspace = dest / job_id / "workspace"
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    return dict(load_file(str(workspace / "FL_global_model.safetensors"))), summary


def holder(fed: Replicas, job_id: str) -> tuple[str, int] | None:
    """Which replica holds the job's lease, and under which epoch (read from PostgreSQL)."""
    from shoal.store.postgres import PostgresJobStore

    store = PostgresJobStore(fed.store_url)
    try:
        lease = store.lease_of(int(job_id))
    finally:
        store.close()
    return (lease.replica, lease.epoch) if lease is not None else None


def test_the_jobs_replica_killed_at_round_3_another_finishes_it_with_the_same_model(
    replicas: Replicas, tmp_path: Path
) -> None:
    fed = replicas
    job = paced_hello(tmp_path / "job", rounds=10, delay=0.5)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0, doc
    want, _ = final_model(fed.cli, doc["data"]["job_id"], tmp_path / "plain")

    job_id = submit_past_round(fed.cli, job, 3)
    owner = holder(fed, job_id)
    assert owner is not None and owner[0] == "replica-a", owner  # balance first: A has the sites
    assert fed.jobs_seen_by("replica-a") == fed.jobs_seen_by("replica-b")
    # any replica answers: B gives A's figures and curves, kept with A's lease (a second old)
    direct_b = fed.direct_kit("replica-b")
    deadline = time.monotonic() + 20
    while True:  # A writes its figures with each lease renewal: they trail its rounds by a second
        code, stats = fed.cli.json("job", "stats", job_id, "--startup-kit", direct_b)
        assert code == 0 and stats["data"]["replica"] == "replica-a", stats
        if stats["data"]["server"]["rounds_done"] >= 3:
            break
        assert time.monotonic() < deadline, f"B never showed A's third round: {stats}"
        time.sleep(0.1)
    assert set(stats["data"]["sites"]) == {"site-1", "site-2"}, stats
    with AdminClient(resolve_admin_kit(None, str(direct_b))) as client:
        series = client.job_series(job_id, "default")
    assert series["replica"] == "replica-a" and len(series["global"]["loss"]) >= 3, series
    waiting = subprocess.Popen(  # a job wait through HAProxy, held by A when A dies
        [sys.executable, "-m", "shoal", "job", "wait", job_id, "--timeout", "120", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=fed.cli.env(),
    )
    monitoring = subprocess.Popen(  # and a monitor, its polls answered by A until A dies
        [sys.executable, "-m", "shoal", "job", "monitor", job_id, "--timeout", "120", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=fed.cli.env(),
    )
    proxy_port = fed.proxy.port if fed.proxy is not None else 0
    wait_connected(waiting.pid, proxy_port)  # (the monitor's polls are answered at once, then held)
    time.sleep(1.1)  # the wait is held by A (a poll cut before it was held fails at once)
    assert rounds_done(fed.cli, job_id) < 9, "the job nearly ended before the kill: pace it slower"

    fed.kill("replica-a")
    out, err = waiting.communicate(timeout=120)
    waited = json.loads(out)
    assert waiting.returncode == 0 and waited["data"]["status"] == "FINISHED_OK", (waited, err)
    out, err = monitoring.communicate(timeout=120)
    assert monitoring.returncode == 0, (out, err)
    assert json.loads(out.splitlines()[-1])["data"]["status"] == "FINISHED_OK", out

    new = holder(fed, job_id)
    assert new is None  # the job ended: its lease went with it
    got, summary = final_model(fed.cli, job_id, tmp_path / "taken-over")
    assert set(got) == set(want)
    for name in want:  # the same rounds from the same models: equal but for the order of a sum
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12)
    assert [r["round"] for r in summary["rounds"]] == list(range(10)), summary["rounds"]
    assert len(summary["restarts"]) == 1 and summary["restarts"][0]["after_round"] >= 2, summary
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    assert "when replica replica-a stopped" in json.dumps(doc["data"].get("notices", [])), doc

    # A comes back (a new process under its name): both replicas list the same jobs, settled
    fed.start_replica("replica-a")
    seen = fed.jobs_seen_by("replica-a")
    assert seen == fed.jobs_seen_by("replica-b") and all(status == "FINISHED_OK" for _, status in seen), seen


def test_a_replica_whose_lease_was_taken_cannot_write_the_job_and_lets_it_go(
    replicas: Replicas, tmp_path: Path
) -> None:
    """Fencing between live processes: while A runs a job, its lease is taken from it in the
    store (as B would once A's lease lapsed, A paused or cut off). A must write nothing more
    about the job, kill its controller and forget it; the new holder's word stands."""
    from shoal.store.postgres import PostgresJobStore
    from shoal.wire.status import JobStatus

    fed = replicas
    job = paced_hello(tmp_path / "job", rounds=40, delay=0.25)
    job_id = submit_past_round(fed.cli, job, 1)
    store = PostgresJobStore(fed.store_url)
    try:
        stolen = store.take_lease(int(job_id), "usurper", 600.0, force=True)
        assert stolen is not None and stolen.epoch == 2
        store.set_status_reason(int(job_id), "held by the usurper", fence=stolen)
        before = store.get_checkpoint(int(job_id))
        # A finds out at its next renewal (within SHOAL_LEASE_RENEW, 1 s): its controller goes
        a_log = fed.workspace / "replica-a.log"
        deadline = time.monotonic() + 15
        while "lost its lease" not in a_log.read_text():
            assert time.monotonic() < deadline, a_log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(2.0)  # rounds it would have checkpointed, had it gone on
        record = store.get_job(int(job_id))
        assert record is not None and record.status is JobStatus.RUNNING, record
        assert record.status_reason == "held by the usurper", record
        assert store.get_checkpoint(int(job_id)) == before
        assert store.lease_of(int(job_id)) == stolen
        code, doc = fed.cli.json("job", "meta", job_id)  # A no longer runs it: no live progress
        assert code == 0 and not (doc["data"].get("progress") or {}).get("stats"), doc
    finally:
        store.close()


def test_a_replica_stopped_with_sigterm_hands_its_job_over_at_once(
    replicas: Replicas, tmp_path: Path
) -> None:
    """A replica stopped on purpose (a rolling upgrade) lets its jobs' leases lapse at once: the
    other takes the job over and finishes it, instead of the job ending ABANDONED."""
    fed = replicas
    job = paced_hello(tmp_path / "job", rounds=8, delay=0.25)
    job_id = submit_past_round(fed.cli, job, 2)
    proc = fed.servers.pop("replica-a")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    assert "handed over to the other replicas" in (fed.workspace / "replica-a.log").read_text()
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    _, summary = final_model(fed.cli, job_id, tmp_path / "handed-over")
    assert [r["round"] for r in summary["rounds"]] == list(range(8)), summary["rounds"]
    assert len(summary["restarts"]) == 1, summary


def test_an_abort_sent_to_the_replica_without_the_job_ends_it_on_its_holder(
    replicas: Replicas, tmp_path: Path
) -> None:
    """`job abort` answered by B for a job A runs: the store says ABORTED at once, and A ends
    the run within a lease renewal, removing its lease and checkpoint rows."""
    from shoal.store.postgres import PostgresJobStore

    fed = replicas
    job = paced_hello(tmp_path / "job", rounds=40, delay=0.25)
    job_id = submit_past_round(fed.cli, job, 1)
    assert holder(fed, job_id) == ("replica-a", 1)
    # B does not run the job, yet shows its progress: what A keeps with its lease each second
    deadline = time.monotonic() + 10
    while True:
        code, doc = fed.cli.json("job", "meta", job_id, "--startup-kit", fed.direct_kit("replica-b"))
        assert code == 0, doc
        progress = doc["data"].get("progress") or {}
        if progress.get("replica") == "replica-a" and (progress.get("stats") or {}).get("rounds_done"):
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)
    assert isinstance(progress["current_round"], int) and progress["total_rounds"] == 40, progress
    code, doc = fed.cli.json("job", "abort", job_id, "--force", "--startup-kit", fed.direct_kit("replica-b"))
    assert code == 0, doc
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0 and doc["data"]["status"] == "ABORTED", doc
    store = PostgresJobStore(fed.store_url)
    try:
        deadline = time.monotonic() + 15
        while store.lease_of(int(job_id)) is not None or store.get_checkpoint(int(job_id)) is not None:
            assert time.monotonic() < deadline, "replica A never ended the aborted run"
            time.sleep(0.1)
    finally:
        store.close()


def test_a_job_submitted_through_a_replica_without_sites_runs_on_the_one_with_them(
    replicas: Replicas, tmp_path: Path
) -> None:
    """B has no sites (balance first keeps them on A); a job submitted to B directly is started
    by A, which looks for waiting jobs once a second, exactly once, under A's lease: B, which
    could reach the sites through A (decisions/0048), leaves it to the replica holding them."""
    fed = replicas
    job = paced_hello(tmp_path / "job", rounds=6, delay=0.1)
    direct_b = fed.direct_kit("replica-b")
    code, doc = fed.cli.json("job", "submit", "-j", job, "--startup-kit", direct_b)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    deadline = time.monotonic() + 30
    while (held := holder(fed, job_id)) is None:
        assert time.monotonic() < deadline, "no replica took the job"
        time.sleep(0.05)
    assert held == ("replica-a", 1), held  # A, the one with the sites, started it, once
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "60", "--startup-kit", direct_b)
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    _, summary = final_model(fed.cli, job_id, tmp_path / "result")
    assert [r["round"] for r in summary["rounds"]] == list(range(6)), summary
    assert not summary.get("restarts"), summary


def sites_seen_by(fed: Replicas, kit: Path, command: str = "status") -> dict[str, str | None]:
    """Each connected site in ``system status`` (or ``system sites``) answered through ``kit``,
    and its replica (decisions/0047)."""
    code, doc = fed.cli.json("system", command, "--startup-kit", kit)
    assert code == 0, doc
    return {row["name"]: row.get("replica") for row in doc["data"]["sites"] if row.get("connected", True)}


def test_every_replica_lists_every_connected_site_and_the_replica_holding_it(
    replicas: Replicas,
) -> None:
    """Balance first puts both sites on A; B, dialled directly, lists them as A's (from the
    shared store's site_sessions). A is SIGKILLed: its rows stop being listed once its
    heartbeat lapses, and the sites, back through HAProxy on B, are listed by B as B's. A
    started again lists them too, as B's, and not as its own from before its death."""
    fed = replicas
    direct_a, direct_b = fed.direct_kit("replica-a"), fed.direct_kit("replica-b")
    both = {"site-1": "replica-a", "site-2": "replica-a"}
    for kit in (direct_a, direct_b):
        assert sites_seen_by(fed, kit) == both
        assert sites_seen_by(fed, kit, "sites") == both

    fed.kill("replica-a")
    moved = {"site-1": "replica-b", "site-2": "replica-b"}
    deadline = time.monotonic() + 30
    seen: dict[str, str | None] = {}
    while (seen := sites_seen_by(fed, direct_b)) != moved:
        assert set(seen.values()) <= {"replica-a", "replica-b"}, seen
        assert time.monotonic() < deadline, f"the sites never showed up on B: {seen}"
        time.sleep(0.2)
    assert sites_seen_by(fed, direct_b, "sites") == moved
    fed.start_replica("replica-a")
    assert sites_seen_by(fed, fed.direct_kit("replica-a")) == moved
    assert sites_seen_by(fed, fed.direct_kit("replica-a"), "sites") == moved


def connected_since(fed: Replicas, kit: Path) -> dict[str, tuple[str, float]]:
    """Each connected site in ``system sites`` through ``kit``: its replica and since when."""
    code, doc = fed.cli.json("system", "sites", "--startup-kit", kit)
    assert code == 0, doc
    return {r["name"]: (r["replica"], r["connected_at"]) for r in doc["data"]["sites"] if r["connected"]}


def test_an_order_for_a_site_on_another_replica_reaches_it_through_the_store(replicas: Replicas) -> None:
    """`system restart-site` asked of B for a site whose channel is on A: B leaves the order in
    site_mail for A (the replica site_sessions names), A, woken by the NOTIFY, sends it on the
    site's channel, and the agent restarts: a newer channel, still on A (balance first)."""
    fed = replicas
    direct_b = fed.direct_kit("replica-b")
    replica, before = connected_since(fed, direct_b)["site-1"]
    assert replica == "replica-a"
    code, doc = fed.cli.json("system", "restart-site", "site-1", "--startup-kit", direct_b)
    assert code == 0 and doc["data"]["sent"] and doc["data"]["replica"] == "replica-a", doc
    deadline = time.monotonic() + 30
    while (now := connected_since(fed, direct_b).get("site-1", ("", before)))[1] <= before:
        assert time.monotonic() < deadline, "site-1 never restarted"
        time.sleep(0.2)
    assert now[0] == "replica-a", now
    assert "restart asked by" in (fed.workspace / "site-1.log").read_text()
