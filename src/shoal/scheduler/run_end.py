"""How a job run ends: its outcome (the one terminal status and reason the job settles to), an
abort, the sites told to end their part, the run's files kept and its status written; or, when
another replica took the job over, the run forgotten without a word to the store or the sites
(decisions/0041).

Owned by ``shoal.scheduler.runner.JobRun`` (its ``end``), which decides the outcome the
workflow's messages mean and calls ``finish`` once the workflow's process has exited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.run_checkpoints import RunCheckpoints
from shoal.scheduler.run_outputs import cleanup_run_dir, keep_outputs, take_outputs
from shoal.scheduler.run_sites import SiteMembership
from shoal.scheduler.workflow_process import WorkflowProcess
from shoal.store.leases import Lease, LeaseLost
from shoal.wire.messages import Message
from shoal.wire.site import AbortJob, EndJob
from shoal.wire.status import JobStatus

if TYPE_CHECKING:
    from shoal.scheduler.tracking import JobTracking
    from shoal.store.jobfiles import JobFiles

log = logging.getLogger("shoal.scheduler")

SITE_END_GRACE = 10.0  # seconds a site gets to stop its process and upload its log

#: What a run ends as: its terminal status, the reason said with it, its first error (if any).
Outcome = tuple[JobStatus, str, dict[str, Any] | None]


class EndHost(Protocol):
    """What a run's end needs of the server (``RunHost`` has it)."""

    job_files: JobFiles  # where a settled job's files are kept (its folder, or the bucket)

    async def send_to_site(self, site: str, message: Message) -> bool:
        """Send on ``site``'s control channel; False if it is not connected."""
        ...

    async def set_status(
        self, job_id: int, status: JobStatus, reason: str, fence: Lease | None = None
    ) -> object:
        """Move the job to ``status`` (the store's compare-and-set), committed off the loop; with
        ``fence``, only while that lease holds the job (here and below: decisions/0041)."""
        ...

    async def record_first_error(
        self, job_id: int, error: dict[str, Any], fence: Lease | None = None
    ) -> None:
        """Keep ``error`` as the job's first error unless it has one."""
        ...

    async def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` still holds its job in the store (decisions/0041)."""
        ...

    def lease_lost(self, job_id: int, fence: Lease | None) -> None:
        """Another replica took the job: forget its run here, writing nothing."""
        ...


class RunEnd:
    """One run's ending. ``sites``: every site the run was deployed to; ``members``, ``workflow``
    and ``checkpoints``: the run's parts the end settles; ``fence``: the run's lease at the time;
    ``tracking``: its trackers at the time (None: it names none); ``notice``: tells the job's
    users something."""

    def __init__(
        self,
        host: EndHost,
        job_id: int,
        paths: JobPaths,
        sites: Collection[str],
        members: SiteMembership,
        workflow: WorkflowProcess,
        checkpoints: RunCheckpoints,
        fence: Callable[[], Lease | None],
        tracking: Callable[[], JobTracking | None],
        notice: Callable[[str], None],
    ) -> None:
        self._host = host
        self._job_id = job_id
        self._paths = paths
        self._sites = sites
        self._members = members
        self._workflow = workflow
        self._checkpoints = checkpoints
        self._fence = fence
        self._tracking = tracking
        self._notice = notice
        #: What the job ends as, once known (nothing more goes to the workflow then).
        self.outcome: Outcome | None = None
        #: Another replica took the job over: the run is forgotten without writing anything.
        self.lost = False
        self.aborting = False
        self.finishing = False
        self.training_done = False  # the workflow said Finishing: it may send no more tasks
        self._sites_ending: asyncio.Task[None] | None = None  # ended after Finishing
        self.done = asyncio.Event()  # the run is settled (or forgotten)

    @property
    def ending(self) -> bool:
        """Whether the run is on its way out (an outcome is known, or it is finishing)."""
        return self.outcome is not None or self.finishing

    async def abort(self, who: str) -> None:
        """Kill the workflow, have every site kill its process group, and wait until it is settled."""
        if not self.finishing:
            self.aborting = True
            self.outcome = (JobStatus.ABORTED, f"aborted by {who}", None)
            self._workflow.kill_group()
        await self.done.wait()

    def forget(self) -> None:
        """Another replica took the job over (this one's lease was lost) or this replica is
        stopping and hands it over: kill the controller and drop the run without a word to the
        store or the sites, which now belong to whoever resumes the job (decisions/0041)."""
        self.lost = True
        if self.outcome is None:  # nothing more goes to the controller
            self.outcome = (JobStatus.ABANDONED, "handed over to another replica", None)
        if not self._workflow.started:  # never started: no pump to end it
            self.done.set()
        self._workflow.kill_group()

    async def still_held(self) -> bool:
        """Whether this replica still holds the job's lease, asked of the store before the run
        tells the sites to end it (a message to a site is not fenced as a store write is). A
        lease another replica took means the run is forgotten here at once."""
        lease = self._fence()
        if lease is None or self.lost:
            return not self.lost
        if await self._host.holds(lease):
            return True
        self._host.lease_lost(self._job_id, lease)
        self.forget()  # if the host had forgotten it already
        return False

    def training_over(self, answer: Callable[[list[str]], None]) -> None:
        """The workflow said its training is over (``Finishing``): from now on it may send no
        task; the sites end their part, and once each confirmed it (or is gone, or
        SITE_END_GRACE passed) ``answer`` gets the stragglers. Every metric a site logged came
        before its confirmation, so the workflow then writes its summary with all of them
        (decisions/0053). The workflow's channel is read meanwhile (a release, its last word)."""
        if self.training_done:
            return
        self.training_done = True
        self._sites_ending = asyncio.get_running_loop().create_task(self._end_sites_then(answer))

    async def _end_sites_then(self, answer: Callable[[list[str]], None]) -> None:
        await self.tell_sites_finished()
        answer(await self._members.settle_within(SITE_END_GRACE))

    async def tell_sites_finished(self) -> None:
        """The workflow finished and its results are written: the sites can stop while its
        process exits (what the sites are told is the lease holder's to say)."""
        if await self.still_held():
            await self._tell_sites(EndJob, "finished")

    async def finish(self) -> bool:
        """The workflow's process has exited: ask the sites to stop and upload their logs
        (bounded wait), then settle the status. Whether the job was settled here (False: the run
        was forgotten, the job is another replica's)."""
        if self.lost:
            await self._forgotten()
            return False
        self.finishing = True
        if not await self.still_held():
            await self._forgotten()
            return False
        assert self.outcome is not None
        status, reason, error = self.outcome
        await self._tell_sites(AbortJob if self.aborting else EndJob, reason)
        stragglers = await self._members.settle_within(SITE_END_GRACE)
        if stragglers:
            log.warning("job %s: sites did not confirm the end: %s", self._job_id, stragglers)
            if self.aborting:
                reason += f"; no confirmation from {', '.join(stragglers)} within {SITE_END_GRACE:g}s"
        tracking = self._tracking()
        if tracking is not None:  # the event files are in the workspace before it is final
            await tracking.close()
        # Reading the workflow's outputs and removing the run's folders touch the disk as much
        # as the job left on it: off the event loop.
        for what in (await asyncio.to_thread(take_outputs, self._paths, self._job_id, self._sites))[:20]:
            self._notice(f"server: a file the workflow wrote was not kept: {what}")
        await keep_outputs(self._host.job_files, self._job_id, self._notice)
        if error is not None:
            await self._host.record_first_error(self._job_id, error, self._fence())
        await self._checkpoints.stop()  # ending: nothing to resume, nothing more to store
        # Before the status: whoever it wakes (a job wait) finds the run's folders gone.
        await asyncio.to_thread(cleanup_run_dir, self._paths, self._job_id)
        await self._host.set_status(self._job_id, status, reason, self._fence())
        try:
            await self._checkpoints.drop()  # ended: nothing to resume
        except LeaseLost:  # taken over meanwhile: the row is the new holder's
            log.warning("job %s: another replica took it over as it ended here", self._job_id)
        self.done.set()
        return True

    async def _tell_sites(self, kind: type[EndJob | AbortJob], reason: str) -> None:
        """Send each site still in the job its "end" (or "abort") once; a site that cannot be
        told counts as gone."""
        await self._members.tell_to_end(
            lambda: kind(job_id=str(self._job_id), reason=reason), self._host.send_to_site
        )

    async def _forgotten(self) -> None:
        """The end of a forgotten run: only this server's own things go (its trackers, the run's
        local folders); the job's row, checkpoint and sites are left to the new holder."""
        await self._checkpoints.stop()
        tracking = self._tracking()
        if tracking is not None:
            await tracking.close()
        await asyncio.to_thread(cleanup_run_dir, self._paths, self._job_id)
        self.done.set()
