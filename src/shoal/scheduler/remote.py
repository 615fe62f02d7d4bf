"""Sites held by other replicas, as the replica running a job sees and reaches them.

With replicas sharing a store (decisions/0041) a site's control channel ends on whichever
replica the load balancer chose, and a job's controller runs on the replica holding its lease.
Each replica reads the shared ``site_sessions`` once a lease pass (``SHOAL_LEASE_RENEW``) into
a ``RemoteSites`` directory: the sites connected to other live replicas, with what their hello
said (studies, resources, the jobs their agent ran). The scheduler counts those sites as
connected when it places a job, and sends them its messages through the store
(``RelayOut``): a row of ``site_mail`` addressed to the site's replica, which passes it on the
site's channel and passes back what the site says (``shoal.server.relay``, decisions/0048).

A site gone from the directory is treated as a local site whose channel closed: its jobs wait
``RECONNECT_GRACE`` seconds for it, then go on without it. A site that shows up with a new
channel (on any replica) is given its unanswered task again, or deployed again if its agent
lost the job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shoal.store import relayblobs
from shoal.store.blobs import Blobs
from shoal.store.sessions import SiteSession
from shoal.wire.messages import Message, encode
from shoal.wire.relay import ForSite
from shoal.wire.site import Deploy, TaskForSite

if TYPE_CHECKING:
    from shoal.scheduler.runner import JobRun, TaskState
    from shoal.scheduler.sites import SiteRegistry
    from shoal.store.base import JobRecord, JobStore

#: Seconds a site that dropped off has to come back before its jobs go on without it: a network
#: blip must not cost a round (its transfers resume when it returns).
RECONNECT_GRACE = 5.0
#: Seconds a relayed deploy is remembered: far past any refresh of the directory (one a second).
FORGET_DEPLOYS = 300.0

log = logging.getLogger("shoal.scheduler")


@dataclass
class Changes:
    """What one refresh of the directory found."""

    #: Sites no longer connected to another replica (and not to this one either).
    gone: list[str] = field(default_factory=list)
    #: Sites with a new channel on another replica, and whether it is a reconnection (the site
    #: had a channel there before, or left one within its grace): its agent may have restarted.
    came: list[tuple[SiteSession, bool]] = field(default_factory=list)


class RemoteSites:
    """The sites connected to other live replicas, as of the last read of ``site_sessions``."""

    def __init__(self) -> None:
        self._sessions: dict[str, SiteSession] = {}
        #: Sites that left the directory, until their grace is over (``settled``).
        self._left: set[str] = set()
        #: When each (site, job) was deployed through another replica (``deployed_since``).
        self._deploys: dict[tuple[str, str], float] = {}

    def refresh(self, sessions: list[SiteSession], here: str, local: set[str]) -> Changes:
        """Take a fresh read of the store's sessions; ``here`` is this replica, ``local`` the
        sites whose channel is on it now (they are this replica's to track, not the directory's)."""
        fresh = {s.site: s for s in sessions if s.replica != here and s.site not in local}
        changes = Changes()
        for name in self._sessions:
            if name not in fresh and name not in local:
                changes.gone.append(name)
                self._left.add(name)
        for name, session in fresh.items():
            before = self._sessions.get(name)
            if before is None or (before.replica, before.since) != (session.replica, session.since):
                changes.came.append((session, before is not None or name in self._left))
            self._left.discard(name)
        self._sessions = fresh
        return changes

    def deployed(self, site: str, job_id: str) -> None:
        """A job was just deployed to ``site`` through its replica (now, by this clock)."""
        self._deploys[(site, job_id)] = time.time()

    def deployed_since(self, site: str, since: float) -> set[str]:
        """The jobs deployed to ``site`` at or after ``since`` (a channel's opening): its agent
        cannot have lost them in a restart before that channel. Older records go."""
        horizon = time.time() - FORGET_DEPLOYS
        for key in [k for k, at in self._deploys.items() if at < horizon]:
            del self._deploys[key]
        return {job for (name, job), at in self._deploys.items() if name == site and at >= since}

    def settled(self, name: str) -> bool:
        """The grace of a site that left is over: True if it is still away from every replica
        but this one (it is no longer remembered as having left)."""
        self._left.discard(name)
        return name not in self._sessions

    def get(self, name: str) -> SiteSession | None:
        return self._sessions.get(name)

    def names(self) -> list[str]:
        return sorted(self._sessions)

    def __contains__(self, name: object) -> bool:
        return name in self._sessions


class RelayOut:
    """What this replica says to sites held by others: each message a ``site_mail`` row for the
    site's replica; a task's model, when it does not ride along, a relay blob of its own
    (``shoal.store.relayblobs``) kept until the task closes or its job ends."""

    def __init__(
        self,
        here: str,
        directory: RemoteSites,
        blobs: Blobs,
        post: Callable[[str, str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.here = here
        self.directory = directory
        self.blobs = blobs
        self._post = post  # (site, replica, message): the store's write, in order with the others
        #: The relay blob of each relayed task's model, by job id and task id.
        self._models: dict[int, dict[str, str]] = {}

    async def send(self, site: str, message: Message, tasks: Mapping[str, TaskState]) -> bool:
        """Leave ``message`` for ``site`` with the replica holding it; False if none does (or the
        task it carries closed meanwhile). ``tasks`` are the tasks of the message's job run."""
        session = self.directory.get(site)
        job_id = getattr(message, "job_id", "")
        if session is None or not isinstance(job_id, str):
            return False
        blob, size = None, None
        if isinstance(message, TaskForSite) and message.model is None:
            held = await self._model_blob(int(job_id), message.task_id, tasks)
            if held is None:
                return False
            blob, size = held
        relayed = ForSite(
            holder=self.here, job_id=job_id, message=encode(message), model_blob=blob, model_bytes=size
        )
        await self._post(site, session.replica, encode(relayed))
        return True

    async def _model_blob(
        self, job_id: int, task_id: str, tasks: Mapping[str, TaskState]
    ) -> tuple[str, int] | None:
        """The relay blob of the task's model, kept once per task; blobs of the job's tasks that
        closed since go now."""
        models = self._models.setdefault(job_id, {})
        for done in [t for t in models if t not in tasks or tasks[t].closed]:
            await asyncio.to_thread(relayblobs.drop, self.blobs, models.pop(done))
        task = tasks.get(task_id)
        if task is None or task.closed:
            return None
        if task_id not in models:
            try:
                models[task_id] = await asyncio.to_thread(relayblobs.put, self.blobs, task.model_path)
            except FileNotFoundError:  # the task closed while its model was being kept
                return None
        return models[task_id], task.model_bytes

    async def job_ended(self, job_id: int) -> None:
        """The job's run ended here (finished, or taken by another replica): its relay blobs go."""
        for blob in self._models.pop(job_id, {}).values():
            try:
                await asyncio.to_thread(relayblobs.drop, self.blobs, blob)
            except Exception:  # the bucket is away: a stray blob costs space, never a job
                log.warning("job %s: a relayed model's blob could not be removed", job_id, exc_info=True)


class RemoteHost(Protocol):
    """What reaching the other replicas' sites needs of the scheduler: its sites here, its runs,
    the shared store, and what a site's arrival means for its jobs."""

    sites: SiteRegistry
    runs: dict[int, JobRun]
    replica: str
    shared: bool
    lease_ttl: float
    store: JobStore

    def kick(self) -> None: ...

    def site_restarted(self, name: str, jobs: set[str]) -> None: ...

    def site_connected(self, name: str) -> None: ...


class RemoteSiteReach:
    """The scheduler's view of the sites held by other replicas (its ``remote_sites``): which
    are there (``directory``), counting them when it places a job, and reaching them
    (``relay_out``). ``post`` leaves a message for a site with its replica (the store's write,
    in order with the scheduler's others)."""

    def __init__(
        self, host: RemoteHost, blobs: Blobs, post: Callable[[str, str, dict[str, Any]], Awaitable[None]]
    ) -> None:
        self._host = host
        self.directory = RemoteSites()  # the sites connected to other live replicas
        self.relay_out = RelayOut(host.replica, self.directory, blobs, post)

    def reachable_sites(self) -> list[str]:
        """The sites a job may be placed on now: connected here, or to another live replica."""
        return sorted(set(self._host.sites.names()) | set(self.directory.names()))

    def hello_of(self, site: str) -> tuple[frozenset[str] | None, dict[str, Any]]:
        """What a reachable site said in its hello: the studies it serves (None: every one) and
        the resources it declared."""
        connected = self._host.sites.get(site)
        if connected is not None:
            return connected.studies, connected.resources
        session = self.directory.get(site)
        if session is None:
            return None, {}
        studies = frozenset(session.studies) if session.studies is not None else None
        return studies, session.resources

    def defers(self, job: JobRecord, targets: Iterable[str]) -> bool:
        """Whether to leave a waiting job to another replica for now: the one that holds most of
        its sites starts it, relaying the fewest tasks (between equals, the first by name, so
        where a job runs is predictable). Only for a lease TTL after its submit; past that,
        whichever replica comes first starts it (the lease decides), so a job never waits on a
        replica that does not."""
        if not self._host.shared or time.time() - job.submit_time > self._host.lease_ttl:
            return False
        held: dict[str, int] = {}
        for site in targets:
            session = self.directory.get(site)
            where = session.replica if session is not None else self._host.replica
            held[where] = held.get(where, 0) + 1
        most = max(held.values(), default=0)
        here = self._host.replica
        return min((r for r, n in held.items() if n == most), default=here) != here

    async def send(self, site: str, message: Message) -> bool | None:
        """Send ``message`` through the site's replica when the site's channel is not on this one
        but on another's; None when the site is not held elsewhere (send it here, or not at all)."""
        if self._host.sites.get(site) is not None or site not in self.directory:
            return None
        job_id = getattr(message, "job_id", None)
        run = self._host.runs.get(int(job_id)) if isinstance(job_id, str) and job_id.isdecimal() else None
        if isinstance(message, Deploy):
            self.directory.deployed(site, message.job_id)
        return await self.relay_out.send(site, message, run.tasks if run is not None else {})

    async def refresh(self) -> None:
        """Read where every site is (a lease pass): a site gone from another replica is given its
        grace, as a local one is; one with a new channel there gets back what it missed."""
        if not self._host.shared:
            return
        sessions = await asyncio.to_thread(self._host.store.site_sessions)
        changes = self.directory.refresh(sessions, self._host.replica, set(self._host.sites.names()))
        loop = asyncio.get_running_loop()
        for name in changes.gone:
            loop.call_later(RECONNECT_GRACE, self._grace_expired, name)
        for session, reconnected in changes.came:
            if reconnected or self._host.sites.held(session.site):
                # as a site's hello after a blip would: jobs its agent lost (it restarted) are
                # lost; not those deployed to it on this very channel (before this replica read it)
                kept = set(session.jobs) | self.directory.deployed_since(session.site, session.since)
                self._host.site_restarted(session.site, kept)
            self._host.site_connected(session.site)  # its runs give it what it missed, or deploy again
        if changes.came:
            self._host.kick()

    def _grace_expired(self, name: str) -> None:
        if not self.directory.settled(name) or self._host.sites.get(name) is not None:
            return  # back, on another replica or on this one
        for run in list(self._host.runs.values()):
            if name in run.site_apps:
                run.site_lost(name, f"the site disconnected and did not return within {RECONNECT_GRACE:g}s")
