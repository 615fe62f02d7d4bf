"""A replica takes over a running job whose lease lapsed only where the job's sites are.

Tasks do not cross replicas (decisions/0042): a replica that took a job over without its sites
would wait for them while they sit on another replica, which then could not take it. Against a
real SQLite store (shared=True makes the scheduler behave as one replica of several); the
replica's lease pass (``lease_pass``) is what runs once a second in a server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shoal.scheduler.scheduler import RESUME_WAIT, Scheduler
from shoal.scheduler.sites import ConnectedSite, SiteRegistry
from shoal.store.base import Submitter
from shoal.store.blobs import BlobStore
from shoal.store.checkpoints import Checkpoint
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.status import JobStatus

ALICE = Submitter(name="alice@example.com", org="acme", role="lead")


def _site(name: str) -> ConnectedSite:
    async def send(message: dict[str, Any]) -> None:
        return None

    return ConnectedSite(name=name, org="acme", send=send)


def _orphan(store: SqliteJobStore, lapsed_for: float) -> int:
    """A running job of two sites whose replica ("dead") stopped ``lapsed_for`` seconds ago."""
    job, _ = store.create_job(
        study="default", name="job", meta={"name": "job"}, content_sha256="a" * 64, submitter=ALICE
    )
    lease = store.take_lease(job.job_id, "dead", -lapsed_for)
    assert lease is not None
    store.transition(job.job_id, JobStatus.DISPATCHED, fence=lease)
    store.transition(job.job_id, JobStatus.RUNNING, fence=lease)
    row = Checkpoint(
        job_id=job.job_id, sites={"site-1": "app", "site-2": "app"}, min_clients=2, resumable=True
    )
    store.put_checkpoint(row, fence=lease)
    return job.job_id


def _scheduler(tmp_path: Path, store: SqliteJobStore, sites: list[str]) -> Scheduler:
    registry = SiteRegistry()
    for name in sites:
        registry.add(_site(name))
    return Scheduler(
        store, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", registry, replica="here", shared=True
    )


async def _one_pass(scheduler: Scheduler) -> None:
    scheduler.kick = lambda: None  # type: ignore[method-assign]  # no dispatch pass: only the takeover
    await scheduler.lease_pass(RESUME_WAIT)


def test_a_replica_without_the_jobs_sites_leaves_it_to_the_one_they_are_on(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "store.db")
    job_id = _orphan(store, lapsed_for=1.0)
    without = _scheduler(tmp_path, store, ["site-1"])  # one of its two sites: fewer than min_clients
    asyncio.run(_one_pass(without))
    lease = store.lease_of(job_id)
    assert lease is not None and lease.replica == "dead" and job_id not in without.resuming
    with_sites = _scheduler(tmp_path, store, ["site-1", "site-2"])
    asyncio.run(_one_pass(with_sites))
    lease = store.lease_of(job_id)
    assert lease is not None and (lease.replica, lease.epoch) == ("here", 2)
    assert job_id in with_sites.resuming
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.RUNNING
    assert job.status_reason == "resuming after replica dead stopped: waiting for its sites"
    for scheduler in (without, with_sites):
        scheduler.close()
    store.close()


def test_past_the_resume_wait_any_replica_takes_it_and_says_what_it_waits_for(tmp_path: Path) -> None:
    """Sites split over replicas must not leave a job held by nobody for ever."""
    store = SqliteJobStore(tmp_path / "store.db")
    job_id = _orphan(store, lapsed_for=RESUME_WAIT + 1.0)
    scheduler = _scheduler(tmp_path, store, [])
    started = time.time()
    asyncio.run(_one_pass(scheduler))
    lease = store.lease_of(job_id)
    assert lease is not None and lease.replica == "here" and lease.expires_at > started
    assert job_id in scheduler.resuming
    scheduler.close()
    store.close()


def test_a_starting_replica_removes_the_leases_of_jobs_that_ended_while_nobody_held_them(
    tmp_path: Path,
) -> None:
    """An abort answered by a replica while the job's holder was dead leaves its lease row; the
    next replica to start removes it (a running job's lease stays with its holder)."""
    store = SqliteJobStore(tmp_path / "store.db")
    ended = _orphan(store, lapsed_for=1.0)
    store.transition(ended, JobStatus.ABORTED, reason="aborted by an admin")
    running = _orphan(store, lapsed_for=-60.0)  # held, live, by "dead" (a replica that runs)
    scheduler = _scheduler(tmp_path, store, [])
    scheduler.settle_after_restart()
    assert store.lease_of(ended) is None
    lease = store.lease_of(running)
    assert lease is not None and lease.replica == "dead"
    scheduler.close()
    store.close()
