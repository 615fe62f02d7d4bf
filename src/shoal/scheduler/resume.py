"""Resuming a job after its server stopped (decisions/0040, 0041): settling at start the jobs a
previous server process left, and starting each job to resume again once its sites are back.

Owned by ``shoal.scheduler.scheduler.Scheduler`` (its ``resumer``); the job tables it reads and
writes (its runs, its jobs to resume, its leases) are the scheduler's, reached through
``ResumeHost``, the part of the scheduler it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.placement import materialise, server_app_of, serves, take_resources
from shoal.scheduler.runner import JobRun, RunHost
from shoal.store.base import JobRecord
from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease, LeaseLost
from shoal.wire.status import JobStatus

if TYPE_CHECKING:
    from shoal.scheduler.remote import RemoteSiteReach
    from shoal.scheduler.replica import LeaseKeeper
    from shoal.scheduler.resources import ResourceBook
    from shoal.scheduler.sites import SiteRegistry
    from shoal.store.base import JobStore
    from shoal.store.blobs import Blobs

log = logging.getLogger("shoal.scheduler")

#: Seconds after a restart that a job to resume waits for every one of its sites to reconnect;
#: past it, it resumes with those back if they are at least its min_clients (else waits on).
RESUME_WAIT = 30.0


class ResumeHost(RunHost, Protocol):
    """What resuming needs of the scheduler: its job tables and the writes it makes."""

    store: JobStore
    blobs: Blobs
    jobs_root: Path
    sites: SiteRegistry
    resources: ResourceBook
    shared: bool
    replica: str
    lease_ttl: float
    max_running: int
    runs: dict[int, JobRun]
    #: Jobs that were RUNNING when their server died and can resume: their checkpoint rows.
    resuming: dict[int, Checkpoint]
    leases: dict[int, Lease]
    resume_event: dict[int, str]
    _resume_until: dict[int, float]
    _starting: set[int]
    remote_sites: RemoteSiteReach  # what a site said in its hello, here or on another replica
    lease_keeper: LeaseKeeper  # settles a job a stopped server left, holds one to resume

    def kick(self) -> None: ...

    def paths(self, job_id: int) -> JobPaths: ...

    async def _set_reason(self, job: JobRecord, reason: str) -> None: ...

    def _end_lease(self, job_id: int) -> None: ...


class Resumer:
    """Settles the jobs a stopped server left, and resumes those that can resume."""

    def __init__(self, host: ResumeHost) -> None:
        self._host = host
        self._timer: asyncio.TimerHandle | None = None  # a look again when a wait for sites is over

    def settle_after_restart(self) -> int:
        """At start, the jobs a previous server process left DISPATCHED or RUNNING. With SQLite
        this process is the store's only server (the workspace lock says so), so it takes every
        one's lease at once: a RUNNING job whose workflow said it can resume waits in
        ``resuming`` for its sites; the others end ABANDONED, with why. With a shared store
        (PostgreSQL) another replica may be running them: they are taken over only once their
        lease lapses (``keep_leases``). Returns how many were settled; checkpoint rows of jobs
        that are not running (a server died between a job's end and the row's removal) go.
        Then the files of settled jobs still on local disk go where the blob store keeps them."""
        rows = {c.job_id: c for c in self._host.store.checkpoints()}
        held = self._host.store.jobs_in_status([JobStatus.DISPATCHED, JobStatus.RUNNING])
        settled = 0
        if not self._host.shared:
            for job in held:
                lease = self._host.store.take_lease(
                    job.job_id, self._host.replica, self._host.lease_ttl, force=True
                )
                assert lease is not None  # forced
                row = self._host.lease_keeper.settle_one(job, lease, "the server restarted")
                if row is None:
                    settled += 1
                else:
                    self._host.lease_keeper.hold_to_resume(row, lease, "the server restarted", RESUME_WAIT)
        active = {job.job_id for job in held}
        for stale in rows.values():
            if stale.job_id not in active:
                self._host.checkpoints.drop_now(stale)
        for lease in self._host.store.leases():  # of jobs that ended (or went) while nobody held them
            record = self._host.store.get_job(lease.job_id)
            if record is None or record.status.terminal:
                self._host.store.end_lease(lease)
        if self._host.resuming:
            log.warning("%d job(s) will resume once their sites are back", len(self._host.resuming))
        left = self._host.job_files.left_behind()
        if left:  # in the background: a restart does not wait for uploads
            threading.Thread(
                target=self._keep_left_behind, args=(left,), name="shoal-keep", daemon=True
            ).start()
        return settled

    def _keep_left_behind(self, job_ids: list[int]) -> None:
        """``keep`` each settled job's files left on local disk (a job abandoned by a stopped
        server, an upload that failed before); a failure leaves them for the next start."""
        for job_id in job_ids:
            job = self._host.store.get_job(job_id)
            if job is None or not job.status.terminal:
                continue  # deleted (its folder is the delete's to remove), or still to run
            try:
                self._host.job_files.keep(job_id)
                log.info("job %s: its files left on local disk are kept in the blob store now", job_id)
            except Exception as exc:
                detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
                log.warning("job %s: keeping its files in the blob store failed again: %s", job_id, detail)

    async def resume_waiting(self, connected: list[str]) -> None:
        """The part of a dispatch pass that resumes jobs: each job waiting to resume is
        considered on its own; one that fails is settled ABANDONED with why."""
        for job_id in list(self._host.resuming):
            try:
                await self._consider(job_id, connected)
            except Exception as exc:
                log.exception("job %s: resuming it failed", job_id)
                row = self._host.resuming.pop(job_id, None)
                fence = self._host.leases.get(job_id)
                event = self._host.resume_event.get(job_id, "the server restarted")
                await self._host.set_status(
                    job_id,
                    JobStatus.ABANDONED,
                    f"{event} while the job was running; resuming it failed: {exc}",
                    fence,
                )
                if row is not None:
                    with contextlib.suppress(LeaseLost):
                        await self._host.checkpoints.drop(row, fence=fence)
                self._host._end_lease(job_id)

    async def _consider(self, job_id: int, connected: list[str]) -> None:
        """Start a job to resume again once its sites are back: all of them, or past
        RESUME_WAIT at least its min_clients. A site whose agent still runs the job keeps its
        training script (it gets the next task; decisions/0040); one that lost it is deployed to."""
        row = self._host.resuming.get(job_id)
        if row is None:  # another dispatch pass (kicks overlap) took it while this one waited
            return
        job = self._host.store.get_job(job_id)
        if job is None or job.status is not JobStatus.RUNNING:  # aborted or deleted meanwhile
            del self._host.resuming[job_id]
            with contextlib.suppress(LeaseLost):
                await self._host.checkpoints.drop(row, fence=self._host.leases.get(job_id))
            self._host._end_lease(job_id)
            return
        back = {
            s: app
            for s, app in row.sites.items()
            if s in connected and serves(self._host.remote_sites.hello_of, s, job.study)
        }
        missing = sorted(set(row.sites) - set(back))
        left = self._host._resume_until.get(job_id, 0.0) - time.monotonic()
        event = self._host.resume_event.get(job_id, "the server restarted")
        if missing and (left > 0 or len(back) < row.min_clients):
            wait = f" (up to {left:.0f}s more)" if left > 0 else f"; {row.min_clients} needed"
            await self._host._set_reason(
                job, f"resuming after {event}: waiting for {', '.join(missing)}{wait}"
            )
            if left > 0 and self._timer is None:  # look again when the wait is over
                self._timer = asyncio.get_running_loop().call_later(left + 0.1, self._wait_over)
            return
        if (
            job_id in self._host.runs
            or job_id in self._host._starting
            or len(self._host.runs) >= self._host.max_running
        ):
            return
        gpus, waits = take_resources(self._host.remote_sites.hello_of, self._host.resources, job, back)
        if gpus is None:
            await self._host._set_reason(
                job, f"resuming after {event}: waiting for resources: " + "; ".join(waits)
            )
            return
        # It stays in ``resuming`` until its run is registered: a site asking about it meanwhile
        # (an old result, the archive) is answered as for a resuming job, never "not running".
        self._host._starting.add(job_id)
        started = False
        try:
            started = await self._start(job, row, back, gpus)
        finally:
            self._host._starting.discard(job_id)
            if not started:
                self._host.resources.release(job_id)

    def _wait_over(self) -> None:
        self._timer = None
        self._host.kick()

    async def _start(
        self, job: JobRecord, row: Checkpoint, targets: dict[str, str], gpus: dict[str, list[str]]
    ) -> bool:
        paths = self._host.paths(job.job_id)
        try:
            # the job folder again from its archive: the server that resumes it may not be the
            # one that ran it, and a folder half-written when that one died is not trusted
            await asyncio.to_thread(materialise, self._host.blobs, job, paths)
            server_app = server_app_of(job.meta.get("deploy_map", {}))
            if server_app is None:
                raise ValueError("deploy_map deploys no app to the server")
            run = JobRun(self._host, job.job_id, paths, server_app, targets, row.min_clients, study=job.study)
            run.gpus = gpus
            run.archive_sha256 = job.content_sha256
            run.resume_from = row
            run.resume_event = self._host.resume_event.get(job.job_id, "the server restarted")
            run.lease = self._host.leases.get(job.job_id)
            run.attached = {
                s for s in targets if (c := self._host.sites.get(s)) is not None and str(job.job_id) in c.jobs
            }
            run.start_tracking(job.name, job.meta, self._host.jobs_root.parent)
            self._host.runs[job.job_id] = run
            self._host.resuming.pop(job.job_id, None)
            await run.start()
            return True
        except Exception as exc:
            log.exception("job %s could not resume", job.job_id)
            self._host.resuming.pop(job.job_id, None)
            self._host.runs.pop(job.job_id, None)
            fence = self._host.leases.get(job.job_id)
            await self._host.record_first_error(
                job.job_id, {"site": "server", "type": type(exc).__name__, "message": str(exc)}, fence
            )
            event = self._host.resume_event.get(job.job_id, "the server restarted")
            await self._host.set_status(
                job.job_id,
                JobStatus.ABANDONED,
                f"{event} while the job was running; it could not resume: {exc}",
                fence,
            )
            with contextlib.suppress(LeaseLost):
                await self._host.checkpoints.drop(row, fence=fence)
            self._host._end_lease(job.job_id)
            return False
