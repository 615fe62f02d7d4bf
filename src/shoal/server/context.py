"""Everything a request handler may touch, built once per server process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from shoal.errors import ShoalError
from shoal.scheduler.scheduler import Scheduler
from shoal.scheduler.sites import SiteRegistry
from shoal.security.policy import DEFAULT_POLICY, Policy
from shoal.server.middleware import identity_of
from shoal.server.relay_book import RelayBook
from shoal.server.studies import DEFAULT_STUDY, Studies
from shoal.store.base import JobRecord, JobStore
from shoal.store.blobs import Blobs
from shoal.wire.models import RESULT_FLOOR_BYTES
from shoal.wire.rules import job_id_number


@dataclass
class ServerContext:
    store: JobStore
    blobs: Blobs
    scheduler: Scheduler
    sites: SiteRegistry
    workspace: Path
    project: str
    kit_dir: Path
    provisioned_sites: list[str] = field(default_factory=list)
    studies: Studies = field(default_factory=lambda: Studies({}))
    policy: Policy = field(default_factory=lambda: Policy(DEFAULT_POLICY))
    max_upload_bytes: int = 256 * 2**20
    max_store_bytes: int | None = None  # quota on stored job archives; None: only the disk limits
    min_free_bytes: int = 64 * 2**20  # refuse submits before the disk is completely full
    result_floor_bytes: int = RESULT_FLOOR_BYTES  # shoal.wire.models.result_bound
    seen_sites: set[str] = field(default_factory=set)
    cert_not_after: float | None = None  # the server certificate's end (epoch seconds)
    started_at: float = field(default_factory=time.time)
    relays: RelayBook = field(default_factory=RelayBook)  # sites' parts in jobs other replicas run

    @property
    def tmp_dir(self) -> Path:
        path = self.workspace / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check_room(self, size: int, sha256: str | None = None) -> None:
        """Refuse a submit the store cannot hold, before anything is written (nothing is damaged).
        An archive the store already holds (``sha256``: blobs are content-addressed) takes no
        new room, so the quota does not count it again."""
        import shutil

        if shutil.disk_usage(self.workspace).free - size < self.min_free_bytes:
            raise ShoalError("STORE_FULL", "the disk under the server's store is nearly full")
        new_bytes = 0 if sha256 is not None and self.blobs.exists(sha256) else size
        if self.max_store_bytes is not None and self.blobs.total_bytes() + new_bytes > self.max_store_bytes:
            raise ShoalError(
                "STORE_FULL", f"the store quota of {self.max_store_bytes} bytes would be exceeded"
            )

    def known_sites(self) -> list[str]:
        """Sites a job could ever run on: provisioned, or seen connected since start."""
        return sorted(set(self.provisioned_sites) | self.seen_sites | set(self.sites.names()))

    def study_of(self, request: web.Request) -> str:
        """The requested study, if it exists and the caller may use it."""
        study = request.query.get("study", DEFAULT_STUDY) or DEFAULT_STUDY
        return self.studies.require(study, identity_of(request))

    def authorize(self, request: web.Request, right: str, job: JobRecord | None = None) -> None:
        owner = (job.submitter.name, job.submitter.org) if job is not None else None
        self.policy.check(identity_of(request), right, owner)

    def job_in_study(self, request: web.Request, right: str = "view") -> JobRecord:
        """The job named in the path, if it is in the requested study and the caller holds
        ``right`` on it; a job of another study answers JOB_NOT_FOUND, as if it did not exist."""
        study = self.study_of(request)
        raw = request.match_info["job_id"]
        job_id = job_id_number(raw)
        job = self.store.get_job(job_id) if job_id is not None else None
        if job is None or job.study != study:
            raise ShoalError("JOB_NOT_FOUND", f"searched study '{study}'", job_id=raw, study=study)
        self.authorize(request, right, job)
        return job


CTX: web.AppKey[ServerContext] = web.AppKey("shoal_ctx", ServerContext)


def small_number(raw: str, max_digits: int) -> int | None:
    """``raw`` as a number if it is 1 to ``max_digits`` ASCII digits, else None. ``isdecimal``
    alone takes other scripts' digits (Arabic-Indic ones), and ``int`` of thousands of digits
    raises instead of answering."""
    if raw.isascii() and raw.isdecimal() and len(raw) <= max_digits:
        return int(raw)
    return None
