"""What comes to a site job from the server: its archive, and the model of each task.

The archive is fetched, checked against the server's record of it (its SHA-256, the blob id)
and unpacked, and the job's app is found inside it (never outside). Each task's model comes
inside the task's message when it is small (INLINE_BYTES), else streamed down; it replaces the
last task's, and passes the site policy's filters on what the site receives (``to_sites``)
before the script may read it.

A part the job (``shoal.site.job.SiteJob``) owns, as decisions/0049 describes: what a model
the filters refuse means for the job stays the job's (``JobTies.failed`` reports it). It sees
the agent through ``InputHost`` only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.errors import ShoalError
from shoal.privacy.protections import filter_model_file
from shoal.site.job_ties import JobTies
from shoal.wire import routes
from shoal.wire.archive import extract_archive
from shoal.wire.site import TaskForSite

if TYPE_CHECKING:
    from shoal.site.metrics import SiteCounters


class InputHost(Protocol):
    """What a job's inputs need of the site agent: the site API's downloads and its counters."""

    counters: SiteCounters  # what the site's own /metrics shows

    async def download(self, path: str, dest: Path) -> None:
        """Stream a file of the site API to ``dest``."""
        ...


class JobInputs:
    """The inputs of one job at a site: its archive and job files in ``folder``, the tasks'
    models in ``models`` (which the script may only read)."""

    def __init__(
        self,
        agent: InputHost,
        job: JobTies,
        *,
        folder: Path,
        models: Path,
    ) -> None:
        self.agent = agent
        self.job_id = job.job_id
        self.folder = folder
        self.models = models
        self._failed = job.failed
        self._note = job.note
        self.to_sites: dict[str, Any] = {}  # the protections applied to every model received

    async def unpack(self, app: str, sha256: str) -> tuple[Path, Path]:
        """Fetch the job's archive, check it against ``sha256`` (the server's record; nothing
        to check if empty) and unpack it; the job's folder and its app's."""
        self.folder.mkdir(parents=True, exist_ok=True)
        archive = self.folder / "job.zip"
        await self.agent.download(routes.fill(routes.SITE_ARCHIVE, job_id=self.job_id), archive)
        if sha256:
            got = await asyncio.to_thread(_sha256_of, archive)
            if got != sha256:
                archive.unlink(missing_ok=True)
                raise ValueError(
                    f"the job archive does not match the server's record (SHA-256 {got[:16]}..., "
                    f"expected {sha256[:16]}...): altered or damaged on its way; not run"
                )
        job_dir = self.folder / "job"
        if job_dir.exists():  # left by an earlier agent process that ran this job and died
            await asyncio.to_thread(shutil.rmtree, job_dir)
        await asyncio.to_thread(extract_archive, archive, job_dir)
        app_dir = (job_dir / app).resolve()
        if not app_dir.is_relative_to(job_dir.resolve()):
            raise ValueError(f"app folder escapes the job: {app}")
        return job_dir, app_dir

    async def model(self, task: TaskForSite) -> Path | None:
        """The task's model, ready for the script: None if the task ended before it arrived (a
        line in the job's log says so) or the site's filters failed on it (the job failed)."""
        task_id = task.task_id
        models = self.models
        models.mkdir(exist_ok=True)
        for old in models.glob("*.safetensors"):
            # Earlier models go: the script answered the tasks they came with. (Results live in
            # results_dir until delivered: one whose inline answer was lost with the link is
            # still going by PUT while the server, which had it, moves on to this task.)
            old.unlink(missing_ok=True)
        model_path = models / f"{task_id}.safetensors"
        try:
            await self.fetch_model(task, model_path)
        except ShoalError as exc:
            if exc.code != "TASK_NOT_OPEN":
                raise
            self._note(f"shoal site: task {task_id} ended before its model arrived; skipped")
            return None
        if self.to_sites:  # the site policy's filters on what it receives (the job's: the server's)
            try:
                await asyncio.to_thread(filter_model_file, model_path, self.to_sites)
            except Exception as exc:  # never hand the script a model its filters did not pass
                model_path.unlink(missing_ok=True)
                await self._failed("PrivacyFilterFailed", f"task {task_id[:64]}'s model: {exc}")
                return None
        return model_path

    async def fetch_model(self, task: TaskForSite, dest: Path) -> None:
        """The task's model into ``dest``: from the message itself when it is small enough to
        ride along (INLINE_BYTES), else streamed down (resumable)."""
        if task.model is not None:
            part = dest.with_name(dest.name + ".part")
            part.write_bytes(base64.b64decode(task.model))
            part.replace(dest)
        else:
            await self.agent.download(
                routes.fill(routes.SITE_TASK_MODEL, job_id=self.job_id, task_id=task.task_id), dest
            )
        self.agent.counters.bytes_from_server += dest.stat().st_size


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
