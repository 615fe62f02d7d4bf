"""Everything a request handler may touch, built once per server process."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from shoal.errors import ShoalError
from shoal.scheduler.scheduler import Scheduler
from shoal.scheduler.sites import SiteRegistry
from shoal.store.base import JobRecord, JobStore
from shoal.store.blobs import BlobStore

DEFAULT_STUDY = "default"
SUBMIT_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class ServerContext:
    store: JobStore
    blobs: BlobStore
    scheduler: Scheduler
    sites: SiteRegistry
    workspace: Path
    project: str
    provisioned_sites: list[str] = field(default_factory=list)
    studies: dict[str, dict[str, object]] = field(default_factory=dict)
    max_upload_bytes: int = 256 * 2**20
    seen_sites: set[str] = field(default_factory=set)

    @property
    def tmp_dir(self) -> Path:
        path = self.workspace / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def known_sites(self) -> list[str]:
        """Sites a job could ever run on: provisioned, or seen connected since start."""
        return sorted(set(self.provisioned_sites) | self.seen_sites | set(self.sites.names()))

    def study_of(self, request: web.Request) -> str:
        study = request.query.get("study", DEFAULT_STUDY) or DEFAULT_STUDY
        if study != DEFAULT_STUDY and study not in self.studies:
            raise ShoalError("STUDY_NOT_FOUND", study=study)
        return study

    def job_in_study(self, request: web.Request) -> JobRecord:
        """The job named in the path, if it belongs to the requested study; else JOB_NOT_FOUND."""
        study = self.study_of(request)
        raw = request.match_info["job_id"]
        job = self.store.get_job(int(raw)) if raw.isdigit() and len(raw) <= 16 else None
        if job is None or job.study != study:
            raise ShoalError("JOB_NOT_FOUND", f"searched study '{study}'", job_id=raw, study=study)
        return job


CTX: web.AppKey[ServerContext] = web.AppKey("shoal_ctx", ServerContext)
