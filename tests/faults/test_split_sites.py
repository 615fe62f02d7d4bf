"""A job whose sites are connected to different replicas: tasks and results cross replicas.

Two replicas share PostgreSQL and a bucket behind HAProxy (tests/replicas.py); site-1 reaches
replica A through HAProxy (``balance first``), site-2 dials replica B itself. A job runs on one
replica (its lease's), and reaches the site held by the other through the shared store: its
messages as ``site_mail`` rows, models and results as relay blobs (decisions/0048). The job
finishes with every round answered by both sites and the model it would have on one server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shoal.wire.models import RESULT_FLOOR_BYTES
from tests.e2e.jobs import paced_hello
from tests.faults.test_replicas import final_model, holder, sites_seen_by, submit_past_round
from tests.pgserver import PostgresServer
from tests.replicas import Replicas, replica_federation
from tests.s3server import S3Server
from tests.security.hostile_site import HostileSite, safetensors_bytes

pytestmark = pytest.mark.e2e

BIG_JOB = Path(__file__).resolve().parents[2] / "bench" / "jobs" / "big"
SPLIT = {"site-1": "replica-a", "site-2": "replica-b"}


@pytest.fixture(scope="module")
def split(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, s3: S3Server
) -> Iterator[Replicas]:
    """One federation for the module's tests on it (each leaves its sites as it found them)."""
    env = {"SHOAL_STORE_URL": postgres.new_database(), **s3.env(s3.new_bucket())}
    with replica_federation(tmp_path_factory.mktemp("split"), env, dial={"site-2": "replica-b"}) as fed:
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


def wait_split(fed: Replicas, replica: str) -> None:
    """Until ``replica`` lists the sites apart, each on its own replica (SPLIT)."""
    deadline = time.monotonic() + 30
    while (seen := sites_seen_by(fed, fed.direct_kit(replica))) != SPLIT:
        assert time.monotonic() < deadline, f"{replica} never listed the sites apart: {seen}"
        time.sleep(0.2)


def run_to_the_end(fed: Replicas, job: Path) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    return str(doc["data"]["job_id"])


def test_a_job_reaches_sites_on_both_replicas_and_every_round_has_both(
    split: Replicas, tmp_path: Path
) -> None:
    fed = split
    for replica in SPLIT.values():  # each replica lists both, each on its own replica
        wait_split(fed, replica)

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
    wait_split(fed, "replica-a")
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


def test_a_hostile_site_on_the_other_replica_is_refused_there_as_it_would_be_on_the_jobs(
    split: Replicas, tmp_path: Path
) -> None:
    """site-2's agent is replaced by a hostile client with its certificate, on replica B; the
    job runs on A (it holds as many of its sites, and comes first by name). What B stands in
    for A is refused as A would refuse it: an upload for a job or a task B passed nothing of, a
    result past the task's bound, one that is not a safetensors file, a model download for a
    task not sent. Nothing of it reaches A, and B keeps no file of it."""
    fed = split
    wait_split(fed, "replica-a")
    agent = fed.sites.pop("site-2")
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(timeout=30)
    job = megabyte_job(tmp_path / "big", rounds=2)
    try:
        job_id, answers, held = asyncio.run(_hostile_uploads(fed, job))
    finally:  # the real agent back, for the module's other tests
        fed.start_site("site-2", fed.workspace / "site-2-to-replica-b")
    assert held == ("replica-a", 1)

    assert answers == {
        "no such job": (409, "JOB_NOT_RUNNING"),
        "no such task": (409, "TASK_NOT_OPEN"),
        "too large": (413, "RESULT_TOO_LARGE"),
        "not safetensors": (400, "MODEL_INVALID"),
        "model of no task": (409, "TASK_NOT_OPEN"),
    }, answers
    assert not list((fed.workspace / "replica-b" / "tmp" / "relay").glob("*")), "B kept a refused upload"
    results = fed.workspace / "replica-a" / "jobs" / job_id / "results"
    assert not results.is_dir() or not any(p.name.endswith("site-2") for p in results.iterdir())


async def _hostile_uploads(
    fed: Replicas, job: Path
) -> tuple[str, dict[str, tuple[int, str]], tuple[str, int] | None]:
    """As site-2 on replica B: the job submitted, its first task taken, refusals asked for; the
    job's replica then, and the job aborted before the hostile site leaves."""
    async with HostileSite(fed, "site-2", fed.workspace / "site-2-to-replica-b") as site:
        code, doc = await asyncio.to_thread(fed.cli.json, "job", "submit", "-j", job)
        assert code == 0, doc
        job_id = str(doc["data"]["job_id"])
        task = await site.next("task", job_id)
        task_id = str(task["task_id"])
        answers: dict[str, tuple[int, str]] = {}

        async def put(name: str, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
            status, said = await site.put(url, body, headers)
            answers[name] = (status, str(said.get("error_code")))

        await put("no such job", site.result_url("4242", task_id), safetensors_bytes())
        await put("no such task", site.result_url(job_id, "nosuchtask"), safetensors_bytes())
        huge = str(RESULT_FLOOR_BYTES + 1)
        await put("too large", site.result_url(job_id, task_id), b"x", {"X-Shoal-Total": huge})
        await put("not safetensors", site.result_url(job_id, task_id), b"garbage" * 100)
        status, said = await site.get(f"{site.base}/site/v1/jobs/{job_id}/tasks/nosuchtask/model")
        answers["model of no task"] = (status, str(said.get("error_code")))
        held = holder(fed, job_id)
        code, doc = await asyncio.to_thread(fed.cli.json, "job", "abort", job_id, "--force")
        assert code == 0, doc
        return job_id, answers, held
