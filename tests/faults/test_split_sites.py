"""A job whose sites are connected to different replicas: tasks and results cross replicas.

Two replicas share PostgreSQL and a bucket behind HAProxy (tests/replicas.py); site-1 reaches
replica A through HAProxy (``balance first``), site-2 dials replica B itself. A job runs on one
replica (its lease's), and reaches the site held by the other through the shared store: its
messages as ``site_mail`` rows, models and results as relay blobs (decisions/0048). The job
finishes with every round answered by both sites and the model it would have on one server.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.jobs import paced_hello
from tests.faults.test_replicas import final_model, holder, sites_seen_by, submit_past_round
from tests.pgserver import PostgresServer
from tests.replicas import Replicas, replica_federation
from tests.s3server import S3Server

pytestmark = pytest.mark.e2e

BIG_JOB = Path(__file__).resolve().parents[2] / "bench" / "jobs" / "big"
SPLIT = {"site-1": "replica-a", "site-2": "replica-b"}


@pytest.fixture
def split(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Iterator[Replicas]:
    env = {"SHOAL_STORE_URL": postgres.new_database(), **s3.env(s3.new_bucket())}
    with replica_federation(tmp_path, env, dial={"site-2": "replica-b"}) as fed:
        yield fed


def megabyte_job(dest: Path, rounds: int) -> Path:
    """bench's large-model job at 1 MB: past the size a task's model or a result rides inline
    in, so models are downloaded and results uploaded. Each site adds 1 to every weight, so
    FedAvg's model after ``rounds`` rounds is ``rounds`` everywhere."""
    shutil.copytree(BIG_JOB, dest)
    (dest / "app" / "config" / "config_fed_client.json").write_text(
        json.dumps({"script": "client.py", "args": "--mb 1"})
    )
    (dest / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": "fedavg", "args": {"num_rounds": rounds}})
    )
    return dest


def run_to_the_end(fed: Replicas, job: Path) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    return str(doc["data"]["job_id"])


def test_a_job_reaches_sites_on_both_replicas_and_every_round_has_both(
    split: Replicas, tmp_path: Path
) -> None:
    fed = split
    for replica in SPLIT.values():  # each replica lists both, each on its own replica
        deadline = time.monotonic() + 30
        while (seen := sites_seen_by(fed, fed.direct_kit(replica))) != SPLIT:
            assert time.monotonic() < deadline, f"{replica} never listed the sites as split: {seen}"
            time.sleep(0.2)

    job_id = run_to_the_end(fed, megabyte_job(tmp_path / "big", rounds=3))
    got, summary = final_model(fed.cli, job_id, tmp_path / "big-out")
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2], summary["rounds"]
    for done in summary["rounds"]:
        assert set(done["sites"]) == set(SPLIT), done  # the remote site answered every round
    assert list(got) == ["w"] and got["w"].size == 2**20 // 4
    np.testing.assert_array_equal(got["w"], np.full(2**20 // 4, 3.0, dtype=np.float32))
    workspace = tmp_path / "big-out" / job_id / "workspace"
    for site in SPLIT:  # each site's final log reached the job's replica, wherever the site was
        assert (workspace / site / "log.txt").is_file(), sorted(p.name for p in workspace.iterdir())

    # small models and results (inline on one replica) cross too: a site's inline result for a
    # job of the other replica is declined and comes by upload instead
    hello = run_to_the_end(fed, paced_hello(tmp_path / "hello", rounds=2, delay=0.0))
    _, said = final_model(fed.cli, hello, tmp_path / "hello-out")
    assert [set(r["sites"]) for r in said["rounds"]] == [set(SPLIT)] * 2, said["rounds"]
    assert holder(fed, hello) is None  # ended: its lease went with it


@pytest.fixture
def spread(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Iterator[Replicas]:
    """site-1 behind a HAProxy that puts A first, site-2 behind one that puts B first: each sits
    on its replica while it lives and moves to the other when it dies."""
    env = {"SHOAL_STORE_URL": postgres.new_database(), **s3.env(s3.new_bucket())}
    with replica_federation(tmp_path, env, first=SPLIT) as fed:
        yield fed


def test_the_replica_relaying_for_a_job_killed_mid_job_its_site_moves_and_the_job_ends_the_same(
    spread: Replicas, tmp_path: Path
) -> None:
    """The job runs on one replica with one of its sites on the other. That other replica is
    SIGKILLed after round 3: its site reconnects to the job's replica through its HAProxy, gets
    what it had not answered again, and the job finishes with every round once and the model of
    an uninterrupted run; the job's replica never stopped, so nothing was resumed."""
    fed = spread
    direct_a = fed.direct_kit("replica-a")
    deadline = time.monotonic() + 30
    while (seen := sites_seen_by(fed, direct_a)) != SPLIT:
        assert time.monotonic() < deadline, f"the sites never sat apart: {seen}"
        time.sleep(0.2)
    job = paced_hello(tmp_path / "job", rounds=8, delay=0.4)
    want, _ = final_model(fed.cli, run_to_the_end(fed, job), tmp_path / "plain")

    job_id = submit_past_round(fed.cli, job, 3)
    owner = holder(fed, job_id)
    assert owner is not None, "the job has no replica"
    relaying = next(name for name in SPLIT.values() if name != owner[0])
    fed.kill(relaying)
    direct = fed.direct_kit(owner[0])
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120", "--startup-kit", direct)
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    got, summary = final_model(fed.cli, job_id, tmp_path / "moved")
    assert [r["round"] for r in summary["rounds"]] == list(range(8)), summary["rounds"]
    assert set(summary["rounds"][-1]["sites"]) == set(SPLIT), summary["rounds"][-1]  # it came back
    assert not summary.get("restarts"), summary  # the job's own replica never stopped
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12)
