"""The storage interface every job store implements, and the records it hands out.

The scheduler, the admin API and the run surface all talk to this Protocol, never to a database
directly: SQLite (``shoal.store.sqlite``, the embedded default) and PostgreSQL
(``shoal.store.postgres``, when SHOAL_STORE_URL names one; ``shoal.store.choice`` picks) pass the
same contract suite (``tests/contract/test_job_store.py``). Records are frozen: a caller that wants a newer
view asks the store again instead of mutating a shared object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease
from shoal.store.mail import Mail
from shoal.store.sessions import SiteSession
from shoal.wire.status import JobStatus

#: Job ids are random integers in [1, 2**53): every JSON parser reads them exactly.
JOB_ID_LIMIT = 2**53

#: Submit-token record states (names follow the reference tool so operators recognise them).
TOKEN_CREATED = "created"
TOKEN_JOB_DELETED = "job_deleted"


@dataclass(frozen=True)
class Submitter:
    """Who submitted a job, as read from the peer certificate; part of a submit token's scope."""

    name: str
    org: str
    role: str


@dataclass(frozen=True)
class JobRecord:
    """One job as the store knows it.

    ``status_reason`` says why a job is still pending or why it ended; ``first_error`` holds
    ``{"site", "type", "message"}`` of the first failure and is never replaced once set.
    ``meta`` is the job's own meta.json content and never holds a submit token.
    """

    job_id: int
    study: str
    name: str
    status: JobStatus
    status_reason: str
    submitter: Submitter
    submit_time: float
    start_time: float | None
    end_time: float | None
    meta: dict[str, Any]
    content_sha256: str
    first_error: dict[str, Any] | None
    cloned_from: int | None


@runtime_checkable
class JobStore(Protocol):
    """Durable home of jobs and submit-token records.

    Every mutating method commits before it returns: the server answers a client only after
    the change would survive ``kill -9``. Implementations must be safe to call from several
    threads; status changes are compare-and-set against ``shoal.wire.status.TRANSITIONS``.
    """

    def create_job(
        self,
        *,
        study: str,
        name: str,
        meta: dict[str, Any],
        content_sha256: str,
        submitter: Submitter,
        submit_token: str | None = None,
        content_hash: str | None = None,
        cloned_from: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a job in status SUBMITTED and commit it; return ``(record, created)``.

        The store picks the id (``secrets.randbelow``), never the client. A ``submit_token``
        (which requires ``content_hash``) makes the call idempotent within the scope
        (study, submitter name/org/role, token): the same content returns the existing job with
        ``created=False``; different content raises ``SUBMIT_TOKEN_CONFLICT`` (data
        ``existing_job_id``); a token whose job was deleted raises ``SUBMIT_TOKEN_JOB_DELETED``.
        Concurrent calls with one token, from any number of threads or processes, create
        exactly one job: the check and the insert share one write transaction, backed by a
        UNIQUE key. A ``submit_token`` key inside ``meta`` is dropped.
        """
        ...

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job, or None when no such job exists (or it was deleted)."""
        ...

    def list_jobs(
        self,
        *,
        study: str | None,
        name_prefix: str | None = None,
        id_prefix: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
        submitter_name: str | None = None,
        submitter_org: str | None = None,
    ) -> list[JobRecord]:
        """Jobs of ``study`` (all studies when None), oldest to newest by submit time.

        ``submitter_name`` and ``submitter_org``, when given, keep only jobs whose submitter has
        exactly that name and org (a listing for a role that sees its own or its org's jobs);
        the limit applies after them.

        ``limit`` keeps the NEWEST N jobs (still shown oldest to newest; ``reverse`` shows
        newest first); a limit larger than any count, even beyond 64 bits, means every job.
        ``name_prefix`` matches case-insensitively; ``id_prefix`` matches the decimal form of
        the id. Indexed: stays fast with tens of thousands of jobs.
        """
        ...

    def find_by_submit_token(self, study: str, submitter: Submitter, token: str) -> JobRecord | None:
        """The job a token created, None if the token is unknown.

        Raises ``SUBMIT_TOKEN_JOB_DELETED`` (data ``job_id``, ``state``, ``deleted_time``) when
        that job has been deleted, so a retrying client learns its job is gone.
        """
        ...

    def transition(
        self,
        job_id: int,
        new_status: JobStatus,
        *,
        reason: str = "",
        first_error: dict[str, Any] | None = None,
        fence: Lease | None = None,
    ) -> JobRecord | None:
        """Compare-and-set the status in one transaction; return the new record or None.

        ``fence`` (here and in the other writes about one job): done only while that lease still
        holds the job, else ``shoal.store.leases.LeaseLost`` is raised and nothing written.

        None means the table forbids the change (for instance the job is already terminal) or
        the job does not exist. RUNNING sets ``start_time``; a terminal status sets
        ``end_time``. ``reason`` replaces ``status_reason``; ``first_error`` is kept only when
        the job has none yet.
        """
        ...

    def set_status_reason(
        self, job_id: int, reason: str, *, fence: Lease | None = None, status: JobStatus | None = None
    ) -> None:
        """Say why a job is still waiting (for instance "waiting for 2 sites"); committed.
        ``status``: only while the job is in that status (a replica that saw it waiting must
        not write over what the replica that started it said)."""
        ...

    def set_first_error(self, job_id: int, error: dict[str, Any], *, fence: Lease | None = None) -> None:
        """Record the first failure of a job; a later call must not replace it. Committed."""
        ...

    def jobs_in_status(self, statuses: Iterable[JobStatus]) -> list[JobRecord]:
        """Every job in one of ``statuses``, oldest first (scheduler queue and restart settling)."""
        ...

    def jobs_without_live_lease(self, statuses: Iterable[JobStatus], now: float) -> list[JobRecord]:
        """Jobs in one of ``statuses`` whose lease lapsed before ``now`` or that have none, oldest
        first: what a replica may take over (decisions/0041)."""
        ...

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs the store holds in each status it has any in (every study)."""
        ...

    def delete_job(self, job_id: int, *, deleted_by: Submitter | None = None) -> int:
        """Delete the job and mark its submit-token records ``job_deleted``; committed.

        Token records are kept forever so a retry with the same token is told the job is gone
        instead of silently creating a new one. Returns how many records were newly marked.
        """
        ...

    def jobs_using_content(self, content_sha256: str) -> int:
        """How many jobs still reference a stored archive (clones share one); a blob with none may go."""
        ...

    def put_checkpoint(self, checkpoint: Checkpoint, *, fence: Lease | None = None) -> None:
        """Insert or replace a running job's checkpoint row (``shoal.store.checkpoints``); committed."""
        ...

    def get_checkpoint(self, job_id: int) -> Checkpoint | None:
        """The job's checkpoint row, or None."""
        ...

    def drop_checkpoint(self, job_id: int, *, fence: Lease | None = None) -> None:
        """Remove the job's checkpoint row (the job ended); committed."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint row (one per running job, and rows a server died before dropping)."""
        ...

    def take_lease(self, job_id: int, replica: str, ttl: float, *, force: bool = False) -> Lease | None:
        """Take the job's lease for ``replica`` if none is live (``shoal.store.leases``)."""
        ...

    def renew_leases(
        self, leases: Iterable[Lease], ttl: float, progress: Mapping[int, dict[str, Any]] | None = None
    ) -> list[Lease]:
        """Renew the leases still held, keeping ``progress`` (JSON per job) with them; those taken
        over are missing from the answer."""
        ...

    def lease_progress(self, job_id: int) -> tuple[str, dict[str, Any]] | None:
        """The job's holder and the progress it last kept with its lease, or None."""
        ...

    def release_lease(self, lease: Lease) -> None:
        """Let a held lease lapse now (another replica may take the job over at once)."""
        ...

    def end_lease(self, lease: Lease) -> None:
        """Remove a held lease (its job ended)."""
        ...

    def lease_of(self, job_id: int) -> Lease | None:
        """The job's lease row, held or lapsed, or None."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease row."""
        ...

    def replica_started(self, replica: str, ttl: float) -> None:
        """A replica starts: its old site sessions go, its heartbeat begins (``shoal.store.sessions``)."""
        ...

    def replica_alive(self, replica: str, ttl: float) -> None:
        """The replica's heartbeat: alive for ``ttl`` more seconds."""
        ...

    def replica_stopped(self, replica: str) -> None:
        """A replica stops: its site sessions and heartbeat go."""
        ...

    def site_opened(self, session: SiteSession) -> None:
        """A site's control channel opened on a replica."""
        ...

    def site_closed(self, session: SiteSession) -> None:
        """A site's control channel closed (its row goes if it is still that channel's)."""
        ...

    def site_sessions(self) -> list[SiteSession]:
        """Every site connected to a live replica, by name."""
        ...

    def post_site_mail(self, site: str, replica: str, message: dict[str, Any]) -> None:
        """Leave a message for a site held by ``replica``, and wake it (``shoal.store.mail``)."""
        ...

    def take_site_mail(self, replica: str) -> list[Mail]:
        """Every message left for ``replica``, oldest first, removed as read."""
        ...

    def close(self) -> None:
        """Release the connection; the store must not be used afterwards."""
        ...
