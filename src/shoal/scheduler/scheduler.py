"""Job lifecycle without HTTP: admission, dispatch, supervision, settling after a restart.

Dispatch is event-driven: a submit, a site connecting, and a job ending each call ``kick``.
Nothing scans the store on a timer, except where replicas share it: each looks for jobs
submitted through another, and for jobs to take over, once a second (``scheduler.replica``).

Every store write the scheduler makes (a status, a waiting reason, a first error) runs in ONE
writer thread, in the order it was asked for (``scheduler.store_writer``, decisions/0037).

Its parts, each owned and seeing the scheduler through a Protocol of its own (decisions/0049):
where a job runs (``placement``), resuming after a server stopped (``resume``: ``resumer``), the
leases it holds among replicas (``replica``: ``lease_keeper``) and the sites of the other
replicas (``remote``: ``remote_sites``), one running job (``runner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shoal.errors import ShoalError
from shoal.runtime.launcher import ForkServer
from shoal.scheduler import placement
from shoal.scheduler.checkpoints import CheckpointKeeper
from shoal.scheduler.events import JobEvents
from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.remote import RECONNECT_GRACE, RemoteSiteReach
from shoal.scheduler.replica import LeaseKeeper, new_replica_id
from shoal.scheduler.resources import ResourceBook
from shoal.scheduler.resume import RESUME_WAIT, Resumer
from shoal.scheduler.runner import JobRun
from shoal.scheduler.sites import SiteRegistry
from shoal.scheduler.store_writer import StoreWriter
from shoal.scheduler.totals import ServerTotals
from shoal.store.base import JobRecord, JobStore
from shoal.store.blobs import Blobs
from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease, LeaseLost
from shoal.wire.messages import Message, encode
from shoal.wire.site import AbortJob
from shoal.wire.status import JobStatus, brief
from shoal.workflows.update_checks import UpdateChecks

if TYPE_CHECKING:
    from shoal.sandbox.confinement import Sandbox

#: RESUME_WAIT lives with the resume (``scheduler.resume``); named here too, where the server's
#: start has always found it.
__all__ = ["RESUME_WAIT", "Scheduler"]

log = logging.getLogger("shoal.scheduler")

T = TypeVar("T")

FINISHED_KEPT = 256


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        blobs: Blobs,
        jobs_root: Path,
        sites: SiteRegistry,
        max_running: int = 8,
        study_sites: Callable[[str], set[str] | None] = lambda study: None,
        custom_code_allowed: Callable[[str], bool] = lambda study: False,
        sandbox: Sandbox | None = None,
        replica: str = "",
        shared: bool = False,
        lease_ttl: float = 3.0,
        lease_renew: float = 1.0,
    ) -> None:
        # This server among the replicas sharing its store (decisions/0041): its name, whether
        # another server process may share the store (PostgreSQL), and its jobs' leases.
        self.replica = replica or new_replica_id()
        self.shared = shared
        self.lease_ttl = lease_ttl
        self.lease_renew = lease_renew
        self.leases: dict[int, Lease] = {}
        self.resume_event: dict[int, str] = {}
        self.study_sites = study_sites
        self.custom_code_allowed = custom_code_allowed  # a study's workflows may be custom code
        self.sandbox = sandbox  # what confines the workflows' processes (None: nothing)
        # What a site's update must pass (local/limits.json); handed to every job's controller.
        self.update_checks = UpdateChecks()
        self.store = store
        self.blobs = blobs
        self.jobs_root = jobs_root
        # Finished jobs' files: in their folders, or in the blob store's bucket (shoal.store.jobfiles)
        self.job_files = blobs.job_files(jobs_root)
        self.sites = sites
        # Sites whose channels are on other replicas, and the way to them (decisions/0048).
        self.remote_sites = RemoteSiteReach(self, blobs, self._post_mail)
        self.events = JobEvents()
        self.totals = ServerTotals()  # since start, over every job (/metrics)
        self.resources = ResourceBook()  # what running jobs hold of each site's declared resources
        self.max_running = max_running
        self.runs: dict[int, JobRun] = {}
        self.checkpoints = CheckpointKeeper(store, blobs)
        #: Jobs that were RUNNING when the previous server died and can resume: their
        #: checkpoint rows, until their sites are back and they run again (decisions/0040).
        self.resuming: dict[int, Checkpoint] = {}
        self._resume_until: dict[
            int, float
        ] = {}  # until when (monotonic) a job to resume waits for all its sites
        self._starting: set[int] = set()  # jobs a dispatch pass is resuming right now
        # The last live facts of recently finished jobs (bounded), so meta and monitor can still
        # show their final round and metrics.
        self.finished: OrderedDict[int, JobRun] = OrderedDict()
        self._kick_pending = False
        self._passing = False  # a dispatch pass is under way; a kick meanwhile asks for another
        self._pass_again = False
        self.writer = StoreWriter()  # the one thread of the store writes (decisions/0037)
        self.resumer = Resumer(self)  # settles and resumes the jobs a stopped server left
        self.lease_keeper = LeaseKeeper(self)  # renews its leases, takes over what others left
        # Job controllers are forked from a process that has numpy and the workflows imported
        # (shoal.runtime.launcher): a job's first round does not wait for an interpreter to start.
        self.launcher = ForkServer(
            ("numpy", "shoal.workflows.fedavg", "shoal.workflows.base", "shoal.sandbox.confinement"),
            pipe_stdout=False,
        )

    def paths(self, job_id: int) -> JobPaths:
        return JobPaths(self.jobs_root / str(job_id))

    def settle_after_restart(self) -> int:
        """At start, the jobs a previous server process left DISPATCHED or RUNNING: to resume,
        or ended ABANDONED (``Resumer.settle_after_restart``); how many were settled."""
        return self.resumer.settle_after_restart()

    async def write(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store write in the writer thread and wait for its commit."""
        return await self.writer.write(call, *args, **kwargs)

    def write_soon(self, call: Callable[..., object], *args: Any) -> None:
        """Queue a store write behind those already asked for, without waiting for it (from code
        that cannot await); a failure is logged."""
        self.writer.write_soon(call, *args)

    async def set_status(
        self, job_id: int, status: JobStatus, reason: str, fence: Lease | None = None
    ) -> JobRecord | None:
        """Move the job (compare-and-set); with ``fence`` only while that lease holds the job:
        one lost means another replica took the job over, and it is forgotten here."""
        try:
            record = await self.write(
                self.store.transition, job_id, status, reason=brief(reason), fence=fence
            )
        except LeaseLost:
            self.lease_lost(job_id, fence)
            return None
        self.events.notify(job_id)
        return record

    def notify(self, job_id: int) -> None:
        self.events.notify(job_id)

    async def send_to_site(self, site: str, message: Message) -> bool:
        """On the site's channel here, or through the replica holding it (decisions/0048)."""
        relayed = await self.remote_sites.send(site, message)
        return relayed if relayed is not None else await self.sites.send(site, encode(message))

    async def _post_mail(self, site: str, replica: str, message: dict[str, Any]) -> None:
        """A message for a site held by ``replica``, in order with this replica's other writes."""
        await self.write(self.store.post_site_mail, site, replica, message)

    def controller_args(self, study: str) -> list[str]:
        """The server's arguments for a study's workflow process: its update checks, and whether
        the study's workflows may be custom code."""
        args = self.update_checks.controller_args()
        return [*args, "--allow-custom-code"] if self.custom_code_allowed(study) else args

    def _first_error(self, job_id: int, error: dict[str, Any], fence: Lease | None = None) -> None:
        message = brief(str(error.get("message", "")))
        self.store.set_first_error(job_id, {**error, "message": message}, fence=fence)

    async def record_first_error(
        self, job_id: int, error: dict[str, Any], fence: Lease | None = None
    ) -> None:
        """Keep ``error`` as the job's first error unless it has one (the store keeps the first)."""
        try:
            await self.write(self._first_error, job_id, error, fence)
        except LeaseLost:
            self.lease_lost(job_id, fence)

    def record_first_error_soon(self, job_id: int, error: dict[str, Any], fence: Lease | None = None) -> None:
        """``record_first_error`` from code that cannot await; the writer keeps the order."""
        self.write_soon(self._first_error, job_id, error, fence)

    async def set_reason(self, job_id: int, reason: str, fence: Lease | None = None) -> None:
        try:
            await self.write(self.store.set_status_reason, job_id, brief(reason), fence=fence)
        except LeaseLost:
            self.lease_lost(job_id, fence)
            return
        self.events.notify(job_id)

    def kick(self) -> None:
        """Ask for a dispatch pass soon; many kicks in one loop turn make one pass."""
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._run_pass)

    def _run_pass(self) -> None:
        self._kick_pending = False
        if self._passing:
            self._pass_again = True
            return
        asyncio.get_running_loop().create_task(self._passes())

    async def _passes(self) -> None:
        """One pass at a time: a pass awaits (store writes, unpacking, starting a controller), and
        two passes at once could each start a job past ``max_running``, or start a later job
        before an earlier one. A kick during a pass runs one more pass after it."""
        self._passing = True
        try:
            while True:
                self._pass_again = False
                await self._dispatch_pending()
                if not self._pass_again:
                    return
        finally:
            self._passing = False

    async def _dispatch_pending(self) -> None:
        """One pass over the waiting jobs. Each job is considered on its own: whatever goes
        wrong with one (a record the server cannot use, a bug) is logged and said in that job's
        status_reason, and the pass goes on to the others."""
        connected = self.remote_sites.reachable_sites()
        await self.resumer.resume_waiting(connected)
        # Read in a worker thread: the queue a sweep leaves is hundreds of jobs, and reading and
        # decoding them on the loop held every answer for up to ~90 ms a pass under load.
        waiting = await asyncio.to_thread(self.store.jobs_in_status, [JobStatus.SUBMITTED])
        full = False  # the bound on running jobs held one back: none after it starts in this pass
        for job in waiting:
            try:
                full = await self._consider(job, connected, full)
            except Exception as exc:
                log.exception("job %s: considering it for dispatch failed", job.job_id)
                try:
                    await self._set_reason(
                        job,
                        f"waiting: the server could not consider it for dispatch ({type(exc).__name__}: "
                        f"{brief(str(exc), 200)}); see the server log",
                    )
                except Exception:  # the store itself failed: the next pass tries again
                    log.exception("job %s: recording why it waits failed", job.job_id)

    async def _consider(self, job: JobRecord, connected: list[str], full: bool) -> bool:
        """Start ``job`` if it can start now, else say why it waits; True once the bound on
        running jobs holds it back (``full``: it held back one before it in this pass). Jobs
        start in the order they were submitted: when a run ends during a pass (the pass awaits
        its store writes), the slot it frees goes to the first job waiting, in the pass its end
        kicks, not to whichever job this pass reaches next."""
        if job.job_id in self.runs:
            return full
        if len(self.runs) >= self.max_running:
            await self._set_reason(
                job, f"waiting: {len(self.runs)} jobs already running (limit {self.max_running})"
            )
            return True
        if full:
            return True
        serving = placement.serving(self.remote_sites.hello_of, connected, job.study)
        targets = placement.target_sites(job.meta.get("deploy_map", {}), serving, self.study_sites(job.study))
        min_clients = int(job.meta.get("min_clients", 1))
        if len(targets) < min_clients:
            have = ", ".join(sorted(targets)) or "none"
            await self._set_reason(
                job, f"waiting for sites: {min_clients} needed, connected and deployable: {have}"
            )
            return False
        if self.remote_sites.defers(job, targets):  # a replica holding more of its sites starts it (0048)
            return False
        gpus, waits = placement.take_resources(self.remote_sites.hello_of, self.resources, job, targets)
        if gpus is None:
            await self._set_reason(job, "waiting for resources: " + "; ".join(waits))
            return False
        await self._dispatch(job, targets, min_clients, gpus)
        return False

    async def _set_reason(self, job: JobRecord, reason: str) -> None:
        """Say why a job waits. One this replica holds, under its lease; one it only saw waiting,
        only while it still waits in that status, and only by a replica with sites to judge by
        (with replicas sharing a store, one without sites has nothing to say about a job)."""
        if job.status_reason == reason:
            return
        fence = self.leases.get(job.job_id)
        if fence is None and self.shared and not self.remote_sites.reachable_sites():
            return
        try:
            await self.write(
                self.store.set_status_reason,
                job.job_id,
                reason,
                fence=fence,
                status=None if fence is not None else job.status,
            )
        except LeaseLost:
            self.lease_lost(job.job_id, fence)
            return
        self.events.notify(job.job_id)

    async def _dispatch(
        self, job: JobRecord, targets: dict[str, str], min_clients: int, gpus: dict[str, list[str]]
    ) -> None:
        started = False
        try:
            started = await self._start_run(job, targets, min_clients, gpus)
        finally:
            if not started:  # what it held comes back however the start ended
                self.resources.release(job.job_id)

    async def _start_run(
        self, job: JobRecord, targets: dict[str, str], min_clients: int, gpus: dict[str, list[str]]
    ) -> bool:
        # The job is this replica's to start only if it takes its lease: of replicas that saw it
        # waiting, the database lets one (decisions/0041).
        lease = await asyncio.to_thread(self.store.take_lease, job.job_id, self.replica, self.lease_ttl)
        if lease is None:
            return False
        self.leases[job.job_id] = lease
        if (
            await self.set_status(
                job.job_id, JobStatus.DISPATCHED, f"deploying to {', '.join(sorted(targets))}", lease
            )
            is None
        ):
            self._end_lease(job.job_id)
            return False
        paths = self.paths(job.job_id)
        try:
            await asyncio.to_thread(placement.materialise, self.blobs, job, paths)
            current = self.store.get_job(job.job_id)
            if current is None or current.status is not JobStatus.DISPATCHED:
                self._end_lease(job.job_id)
                return False  # aborted or deleted while it was being unpacked
            server_app = placement.server_app_of(job.meta.get("deploy_map", {}))
            if server_app is None:
                raise ValueError("deploy_map deploys no app to the server")
            run = JobRun(self, job.job_id, paths, server_app, targets, min_clients, study=job.study)
            run.gpus = gpus
            run.archive_sha256 = job.content_sha256
            run.lease = lease
            run.start_tracking(job.name, job.meta, self.jobs_root.parent)
            self.runs[job.job_id] = run
            await run.start()
            return True
        except Exception as exc:
            log.exception("job %s could not start", job.job_id)
            self.runs.pop(job.job_id, None)
            await self.record_first_error(
                job.job_id, {"site": "server", "type": type(exc).__name__, "message": str(exc)}, lease
            )
            await self.set_status(job.job_id, JobStatus.FAILED, f"could not start the job: {exc}", lease)
            self._end_lease(job.job_id)
            return False

    async def abort(self, job: JobRecord, who: str) -> JobRecord:
        """End a job that has not finished: kill what runs, or cancel what waits."""
        if job.status.terminal:
            raise ShoalError(
                "JOB_NOT_RUNNING", f"it already ended as {job.status.value}", job_id=str(job.job_id)
            )
        run = self.runs.get(job.job_id)
        row = self.resuming.pop(job.job_id, None)
        fence = self.leases.get(job.job_id)
        if run is not None:
            await run.end.abort(who)
        elif row is not None:  # waiting to resume: its sites may still run its scripts
            await self.set_status(
                job.job_id, JobStatus.ABORTED, f"aborted by {who} while it waited to resume", fence
            )
            for site in row.sites:
                await self.sites.send(
                    site, encode(AbortJob(job_id=str(job.job_id), reason=f"aborted by {who}"))
                )
            with contextlib.suppress(LeaseLost):
                await self.checkpoints.drop(row, fence=fence)
            self._end_lease(job.job_id)
        elif self.lease_keeper.runs_elsewhere(job.job_id):
            # Another replica runs it: the store says ABORTED, and that replica, seeing it at its
            # next lease renewal, ends the run and tells the sites (decisions/0041).
            await self.set_status(job.job_id, JobStatus.ABORTED, f"aborted by {who}")
        else:
            await self.set_status(job.job_id, JobStatus.ABORTED, f"aborted by {who} before it started")
        final = self.store.get_job(job.job_id)
        assert final is not None
        return final

    def run_of(self, job_id: int) -> JobRun | None:
        """The running job's live state, or the last state of a recently finished one."""
        return self.runs.get(job_id) or self.finished.get(job_id)

    def run_finished(self, run: JobRun) -> None:
        if self.runs.get(run.job_id) is run:
            del self.runs[run.job_id]
        self.resources.release(run.job_id)
        if run.lease is not None and self.leases.get(run.job_id) == run.lease:
            self._end_lease(run.job_id)
        self.finished[run.job_id] = run
        asyncio.get_running_loop().create_task(self.remote_sites.relay_out.job_ended(run.job_id))
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)
        self.kick()

    def site_connected(self, name: str) -> None:
        for run in list(self.runs.values()):
            if name in run.site_apps:
                asyncio.get_running_loop().create_task(run.site_returned(name))
        self.kick()

    def site_disconnected(self, name: str) -> None:
        """Give the site RECONNECT_GRACE seconds to come back before its jobs go on without it:
        a network blip must not cost a round (its transfers resume when it returns)."""
        self.sites.hold(name)
        asyncio.get_running_loop().call_later(RECONNECT_GRACE, self._grace_expired, name)

    def _grace_expired(self, name: str) -> None:
        if not self.sites.drop(name) or name in self.remote_sites.directory:
            return  # back, here or on another replica (its runs were told: RemoteSiteReach.refresh)
        for run in list(self.runs.values()):
            if name in run.site_apps:
                run.site_lost(name, f"the site disconnected and did not return within {RECONNECT_GRACE:g}s")

    def site_restarted(self, name: str, jobs: set[str]) -> None:
        """A site connected without jobs it should be running (its agent restarted): those
        jobs lost it now; site_connected deploys them to it again."""
        for run in list(self.runs.values()):
            if name in run.site_apps and str(run.job_id) not in jobs:
                run.site_lost(name, "the site restarted and lost the job")

    async def shutdown(self) -> None:
        """Server is stopping: kill every controller. With replicas sharing the store, their jobs
        go to the others (``hand_over``); else they end ABANDONED with a reason."""
        if self.shared:
            await self.lease_keeper.hand_over()
        await self.launcher.close()
        for run in list(self.runs.values()):
            run.kill()
            # set_status wakes the long polls (job wait, monitor) on it: they answer with the
            # terminal status at once instead of holding the server's shutdown open.
            await self.set_status(
                run.job_id, JobStatus.ABANDONED, "the server shut down while the job was running", run.lease
            )
        self.runs.clear()

    def _end_lease(self, job_id: int) -> None:
        """The job is no longer this replica's to hold (it ended, or never started here)."""
        lease = self.leases.pop(job_id, None)
        self.resume_event.pop(job_id, None)
        self._resume_until.pop(job_id, None)
        if lease is not None:
            self.write_soon(self.store.end_lease, lease)

    # What others ask of the scheduler about replicas; the lease keeper's to answer.

    async def keep_leases(self, wait: float) -> None:
        """Renew, forget, end and take over, for the server's life (``LeaseKeeper.keep_leases``)."""
        await self.lease_keeper.keep_leases(wait)

    async def lease_pass(self, wait: float) -> None:
        """One pass of the lease keeper (``LeaseKeeper.lease_pass``)."""
        await self.lease_keeper.lease_pass(wait)

    async def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` still holds its job in the store (``LeaseKeeper.holds``)."""
        return await self.lease_keeper.holds(lease)

    def lease_lost(self, job_id: int, fence: Lease | None) -> None:
        """Another replica holds the job now: forget it here (``LeaseKeeper.lease_lost``)."""
        self.lease_keeper.lease_lost(job_id, fence)

    @property
    def store_poll(self) -> float:
        """How long a long poll may sleep before reading the store again (``LeaseKeeper.store_poll``)."""
        return self.lease_keeper.store_poll

    def progress_elsewhere(self, job: JobRecord) -> tuple[str, dict[str, Any]] | None:
        """The replica running ``job`` and its progress (``LeaseKeeper.progress_elsewhere``)."""
        return self.lease_keeper.progress_elsewhere(job)

    def runs_elsewhere(self, job_id: int) -> bool:
        """Whether another replica may run ``job_id`` (``LeaseKeeper.runs_elsewhere``)."""
        return self.lease_keeper.runs_elsewhere(job_id)

    def close(self) -> None:
        """Wait for the store writes already asked for; call after the last request is done and
        before the store is closed."""
        self.writer.close()
        self.checkpoints.close()
