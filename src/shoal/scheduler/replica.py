"""This server as one replica of several: its jobs' leases, and taking over the jobs of a replica
that stopped (decisions/0041).

Every job a server starts or resumes is held by a lease in the store (``shoal.store.leases``),
with SQLite as with PostgreSQL; only PostgreSQL can be shared by several server processes
(``shared``). Once a second (``SHOAL_LEASE_RENEW``) the replica renews its leases, forgets the
jobs whose lease another replica took (killing their controllers, writing nothing), ends the
runs whose job another replica aborted, and takes over every running job whose lease lapsed:
it resumes from its last finished round as after a restart (decisions/0040), since a takeover
is that same resume done by another process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease
from shoal.wire.jsonout import finite
from shoal.wire.status import JobStatus, brief

if TYPE_CHECKING:
    from shoal.scheduler.remote import RemoteSiteReach
    from shoal.scheduler.resources import ResourceBook
    from shoal.scheduler.runner import JobRun
    from shoal.scheduler.sites import SiteRegistry
    from shoal.store.base import JobRecord, JobStore

log = logging.getLogger("shoal.scheduler")

#: The statuses of a job some replica holds (its controller runs or is being started).
HELD = (JobStatus.DISPATCHED, JobStatus.RUNNING)


#: At most this many sites' statuses go with a job's progress into its lease row.
SITES_SAID_MAX = 200
#: Its curves go along with at most this many sites, each curve's last this many rounds (the
#: row is written every second: a few tens of KB at most).
SERIES_SAID_SITES = 20
SERIES_SAID_POINTS = 100


def progress_said(run: JobRun) -> dict[str, Any]:
    """What the replicas that do not run a job show of its progress (``job meta``): the holder's
    round, last metrics, rounds done and notices, as strict JSON, written with each renewal."""
    p = run.progress
    sites = dict(p.site_status) if len(p.site_status) <= SITES_SAID_MAX else {}
    said = {
        "current_round": p.current_round,
        "round": p.round,
        "total_rounds": p.total_rounds,
        "last_metrics": p.last_metrics,
        "last_metrics_round": p.last_metrics_round,
        "sites": sites,
        "stats": {"rounds_done": p.rounds_done, "current_round": p.current_round, "round": p.round},
        "notices": list(p.notices)[-20:],
        # what ``job stats`` and ``job series`` answer on a replica that does not run the job
        "server_stats": {**p.as_stats(), "participating_sites": run.sites},
        "site_stats": p.sites_stats(run.sites) if len(run.sites) <= SITES_SAID_MAX else {},
        "series": p.series(SERIES_SAID_POINTS) if len(run.sites) <= SERIES_SAID_SITES else None,
    }
    clean: dict[str, Any] = finite(said)
    return clean


def new_replica_id() -> str:
    """A replica's name when the operator gave none: random, so two never meet."""
    return "replica-" + secrets.token_hex(4)


class LeaseHost(Protocol):
    """What the lease keeper needs of the scheduler: its job tables (its runs, the leases it
    holds, its jobs to resume), the store, its sites here and elsewhere, and a dispatch pass."""

    store: JobStore
    sites: SiteRegistry
    resources: ResourceBook  # what a forgotten run held goes back
    remote_sites: RemoteSiteReach  # the sites of the other replicas, refreshed at each pass
    replica: str
    shared: bool
    lease_ttl: float
    lease_renew: float
    runs: dict[int, JobRun]
    #: The leases this replica holds, by job id (its runs, jobs waiting to resume, jobs starting).
    leases: dict[int, Lease]
    resuming: dict[int, Checkpoint]
    #: What each job waiting to resume came back from ("the server restarted", "replica X stopped").
    resume_event: dict[int, str]
    #: Until when (monotonic) a job to resume waits for all its sites.
    _resume_until: dict[int, float]
    _starting: set[int]

    def kick(self) -> None: ...


class LeaseKeeper:
    """The scheduler's leases among replicas (its ``lease_keeper``): renewing what it holds,
    forgetting what another replica took, taking over what a stopped one left, and what the
    other replicas' leases say of their jobs. The tables are the scheduler's (``LeaseHost``)."""

    def __init__(self, host: LeaseHost) -> None:
        self._host = host

    def settle_one(self, job: JobRecord, lease: Lease, event: str) -> Checkpoint | None:
        """A job this replica just took the lease of, left DISPATCHED or RUNNING by a server that
        stopped: its checkpoint row if it is to resume (the caller keeps it in ``resuming``),
        else None once it is settled ABANDONED with why. Store calls only: run in a thread."""
        row = self._host.store.get_checkpoint(job.job_id)
        if job.status is JobStatus.RUNNING and row is not None and row.resumable:
            self._host.store.set_status_reason(
                job.job_id, f"resuming after {event}: waiting for its sites", fence=lease
            )
            return row
        stopped = f"{event} while the job was running"
        if job.status is JobStatus.DISPATCHED:
            reason = stopped
        elif row is None or not row.workflow:
            reason = f"{stopped}, before its workflow said whether it can resume"
        else:
            reason = f"{stopped}; its workflow {row.workflow} cannot resume"
        self._host.store.transition(job.job_id, JobStatus.ABANDONED, reason=brief(reason), fence=lease)
        if row is not None:
            self._host.store.drop_checkpoint(job.job_id, fence=lease)
        self._host.store.end_lease(lease)
        return None

    def hold_to_resume(self, row: Checkpoint, lease: Lease, event: str, wait: float) -> None:
        """Keep a job to resume: its lease held, its checkpoint row waiting for its sites."""
        self._host.leases[row.job_id] = lease
        self._host.resuming[row.job_id] = row
        self._host.resume_event[row.job_id] = event
        self._host._resume_until[row.job_id] = time.monotonic() + wait

    async def keep_leases(self, wait: float) -> None:
        """Run for the server's life: renew, forget, end and take over, once every ``lease_renew``."""
        while True:
            await asyncio.sleep(self._host.lease_renew)
            try:
                await self.lease_pass(wait)
            except Exception:  # the store is away, say: the next pass tries again
                log.exception("replica %s: renewing leases or taking jobs over failed", self._host.replica)

    async def lease_pass(self, wait: float) -> None:
        """One pass: the heartbeat, where the other replicas' sites are, the leases renewed (those
        lost forgotten), the runs ended elsewhere ended here, the lapsed jobs taken over."""
        host = self._host
        if host.shared:  # the heartbeat that keeps this replica's site sessions listed
            await asyncio.to_thread(host.store.replica_alive, host.replica, host.lease_ttl)
            await host.remote_sites.refresh()  # where the other replicas' sites are (decisions/0048)
        held = list(host.leases.values())
        if held:
            # what the other replicas show of these jobs; a store no other replica reads needs none
            said = {job_id: progress_said(run) for job_id, run in host.runs.items()} if host.shared else None
            renewed = {
                lease.job_id
                for lease in await asyncio.to_thread(host.store.renew_leases, held, host.lease_ttl, said)
            }
            for lease in held:
                if lease.job_id not in renewed:
                    self.lease_lost(lease.job_id, lease)
            await self._end_runs_ended_elsewhere()
        taken = await self._take_over(wait)
        waiting = host.shared and bool(
            await asyncio.to_thread(host.store.jobs_in_status, [JobStatus.SUBMITTED])
        )
        if taken or waiting:  # a job submitted through another replica may run on this one's sites
            host.kick()

    async def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` still holds its job in the store (same replica and epoch)."""
        now = await asyncio.to_thread(self._host.store.lease_of, lease.job_id)
        return now is not None and (now.replica, now.epoch) == (lease.replica, lease.epoch)

    def lease_lost(self, job_id: int, fence: Lease | None) -> None:
        """Another replica holds the job now: forget it here without writing anything."""
        held = self._host.leases.get(job_id)
        if held is None or fence is None or held.epoch != fence.epoch:
            return
        del self._host.leases[job_id]
        log.warning(
            "job %s: replica %s lost its lease (epoch %d); another replica runs it now",
            job_id,
            self._host.replica,
            held.epoch,
        )
        self._host.resuming.pop(job_id, None)
        run = self._host.runs.pop(job_id, None)
        if run is not None:
            run.end.forget()
            self._host.resources.release(job_id)

    async def _end_runs_ended_elsewhere(self) -> None:
        """A job of this replica's that an admin on another replica aborted (or deleted): its
        status in the store is terminal; the run ends here, telling its sites."""
        for run in list(self._host.runs.values()):
            if run.end.ending:
                continue
            job = await asyncio.to_thread(self._host.store.get_job, run.job_id)
            if job is None or job.status.terminal:
                asyncio.get_running_loop().create_task(run.end.abort("an admin on another replica"))

    async def _take_over(self, wait: float) -> bool:
        """Take the lease of every held job whose lease lapsed (its replica stopped) and settle it:
        to resume once its sites are here, or ABANDONED. Whether any was taken."""
        host = self._host
        now = time.time()
        orphans = await asyncio.to_thread(host.store.jobs_without_live_lease, HELD, now)
        taken = False
        for job in orphans:
            if job.job_id in host.leases or job.job_id in host._starting:
                continue
            before = await asyncio.to_thread(host.store.lease_of, job.job_id)
            if not await self._may_take(job, before, now, wait):
                continue
            lease = await asyncio.to_thread(host.store.take_lease, job.job_id, host.replica, host.lease_ttl)
            if lease is None:  # another replica was quicker
                continue
            event = f"replica {before.replica} stopped" if before is not None else "its server stopped"
            log.warning(
                "job %s: %s; replica %s takes it over (epoch %d)",
                job.job_id,
                event,
                host.replica,
                lease.epoch,
            )
            row = await asyncio.to_thread(self.settle_one, job, lease, event)
            if row is not None:
                self.hold_to_resume(row, lease, event, wait)
            taken = True
        return taken

    async def _may_take(self, job: JobRecord, before: Lease | None, now: float, wait: float) -> bool:
        """Whether this replica should take over a job to resume: at once with enough of its
        sites (at least its min_clients) connected here, since it then relays least; one lease
        TTL later with enough of them connected to any live replica, tasks reaching them through
        theirs (decisions/0048). Past ``wait`` seconds of a lapsed lease, any replica takes it
        (it then waits for its sites as a restarted server does, saying so)."""
        if before is not None and now - before.expires_at > wait:
            return True
        row = await asyncio.to_thread(self._host.store.get_checkpoint, job.job_id)
        if row is None or not row.resumable or job.status is not JobStatus.RUNNING:
            return True  # nothing to resume: settled by whoever comes first
        need, sites = max(1, row.min_clients), set(row.sites)
        if len(set(self._host.sites.names()) & sites) >= need:
            return True
        lapsed_for = now - before.expires_at if before is not None else float("inf")
        reachable = set(self._host.remote_sites.reachable_sites())
        return lapsed_for > self._host.lease_ttl and len(reachable & sites) >= need

    @property
    def store_poll(self) -> float:
        """How long a long poll (job wait, monitor) may sleep before reading the store again: a
        job another replica runs changes without a word to this one."""
        return self._host.lease_renew if self._host.shared else float("inf")

    def progress_elsewhere(self, job: JobRecord) -> tuple[str, dict[str, Any]] | None:
        """For a running job another replica holds: that replica and the progress it last kept
        with its lease (``job meta`` on any replica). None with an unshared store, for a job this
        replica runs, or one that ended."""
        if not self._host.shared or job.status.terminal or job.job_id in self._host.runs:
            return None
        said = self._host.store.lease_progress(job.job_id)
        return said if said is not None and said[0] != self._host.replica else None

    def runs_elsewhere(self, job_id: int) -> bool:
        """Whether another replica may run ``job_id`` (or is about to take it over): a site must
        not be told to stop it. Never with a store no other replica shares."""
        if not self._host.shared:
            return False
        job = self._host.store.get_job(job_id)
        return job is not None and job.status in HELD

    async def hand_over(self) -> None:
        """This replica is stopping: its jobs go to the others at once (their leases lapse now)
        instead of ending ABANDONED. Their controllers are killed; the sites keep their scripts."""
        for job_id, lease in list(self._host.leases.items()):
            run = self._host.runs.pop(job_id, None)
            if run is not None:
                run.end.forget()
            self._host.resuming.pop(job_id, None)
            await asyncio.to_thread(self._host.store.release_lease, lease)
            log.info("job %s: handed over to the other replicas", job_id)
        self._host.leases.clear()
        host = self._host
        await asyncio.to_thread(host.store.replica_stopped, host.replica)  # its sites' rows go now
