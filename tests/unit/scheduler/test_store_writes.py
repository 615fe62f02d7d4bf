"""The scheduler keeps the server's event loop free of store commits, and runs one dispatch pass
at a time.

Against a real SQLite store whose commits are made slow (as an fsync on a busy disk is): the loop
must go on answering while a status is being committed, and a job's writes must land in the
order they were asked for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shoal.scheduler.scheduler import Scheduler
from shoal.scheduler.sites import SiteRegistry
from shoal.store.base import JobRecord, Submitter
from shoal.store.blobs import BlobStore
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.status import JobStatus

ALICE = Submitter(name="alice@example.com", org="acme", role="lead")
COMMIT = 0.2  # seconds each slow commit takes


class SlowCommits(SqliteJobStore):
    """A real store whose status writes take COMMIT seconds, like a durable commit on a busy disk."""

    def transition(self, job_id: int, new_status: JobStatus, **kw: Any) -> JobRecord | None:
        time.sleep(COMMIT)
        return super().transition(job_id, new_status, **kw)

    def set_first_error(self, job_id: int, error: dict[str, Any], **kw: Any) -> None:
        time.sleep(COMMIT)
        super().set_first_error(job_id, error, **kw)


def _scheduler(tmp_path: Path) -> tuple[Scheduler, SqliteJobStore, int]:
    store = SlowCommits(tmp_path / "store.db")
    scheduler = Scheduler(store, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", SiteRegistry())
    job, _ = store.create_job(
        study="default", name="job", meta={"name": "job"}, content_sha256="a" * 64, submitter=ALICE
    )
    return scheduler, store, job.job_id


def test_the_loop_keeps_running_while_a_status_is_committed(tmp_path: Path) -> None:
    scheduler, store, job_id = _scheduler(tmp_path)

    async def scenario() -> tuple[int, JobRecord | None]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.get_running_loop().create_task(ticker())
        record = await scheduler.set_status(job_id, JobStatus.ABORTED, "aborted by a test")
        task.cancel()
        return ticks, record

    ticks, record = asyncio.run(scenario())
    scheduler.close()
    assert record is not None and record.status is JobStatus.ABORTED
    # ~20 ticks fit in the commit; a commit on the loop would have allowed none
    assert ticks >= 5, ticks
    store.close()


def test_writes_asked_for_without_waiting_land_first(tmp_path: Path) -> None:
    """A site's failure is recorded without awaiting (``record_first_error_soon``); the job's
    own later error must not overtake it: the writer runs writes in the order they were asked."""
    scheduler, store, job_id = _scheduler(tmp_path)

    async def scenario() -> None:
        scheduler.record_first_error_soon(job_id, {"site": "site-1", "type": "E", "message": "first"})
        await scheduler.record_first_error(job_id, {"site": "server", "type": "E", "message": "later"})

    asyncio.run(scenario())
    scheduler.close()
    job = store.get_job(job_id)
    assert job is not None and job.first_error is not None
    assert job.first_error["message"] == "first", job.first_error
    store.close()


def test_one_dispatch_pass_at_a_time(tmp_path: Path) -> None:
    """Kicks during a pass (a submit, a job ending) run one more pass after it, never beside it:
    two passes at once could each start a job past max_running."""
    scheduler, store, _ = _scheduler(tmp_path)
    running = 0
    most = 0
    passes = 0

    async def slow_pass() -> None:
        nonlocal running, most, passes
        running += 1
        passes += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    scheduler._dispatch_pending = slow_pass  # type: ignore[method-assign]

    async def scenario() -> None:
        for _ in range(5):
            scheduler.kick()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    scheduler.close()
    store.close()
    assert most == 1, most
    assert 2 <= passes <= 4, passes


class SlowQueueRead(SqliteJobStore):
    """A real store whose read of the waiting jobs takes COMMIT seconds (a long queue)."""

    def jobs_in_status(self, statuses: Any) -> list[JobRecord]:
        time.sleep(COMMIT)
        return super().jobs_in_status(statuses)


def test_the_loop_keeps_running_while_a_pass_reads_the_queue(tmp_path: Path) -> None:
    """Issue 19: a dispatch pass reads every waiting job; with a sweep's hundreds queued that
    read held the loop (and every admin's answer) for up to ~90 ms a pass."""
    store = SlowQueueRead(tmp_path / "store.db")
    scheduler = Scheduler(store, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", SiteRegistry())

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.get_running_loop().create_task(ticker())
        await scheduler._passes()
        task.cancel()
        return ticks

    ticks = asyncio.run(scenario())
    scheduler.close()
    store.close()
    # ~20 ticks fit in the read; a read on the loop would have allowed none
    assert ticks >= 5, ticks
