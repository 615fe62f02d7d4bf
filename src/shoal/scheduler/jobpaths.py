"""Where one job's files live on the server, folder by folder, and who may write each.

Kept apart from the run (``shoal.scheduler.runner``) because the scheduler, the ending of a run
and the routes that serve a job's files all name these folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class JobPaths:
    """Where one job's files live on the server."""

    root: Path

    @property
    def job(self) -> Path:
        """The submitted job definition, extracted."""
        return self.root / "job"

    @property
    def run(self) -> Path:
        """The workflow's scratch space (its working folder, where it writes each task's model);
        the workflow's process may write here, so the server only takes files out of it
        (``shoal.sandbox.files``)."""
        return self.root / "run"

    @property
    def out(self) -> Path:
        """Where the workflow writes its results (the global model, metrics_summary.json, ...);
        moved into ``workspace`` when its process has ended."""
        return self.root / "out"

    @property
    def models(self) -> Path:
        """The models of the tasks in flight, taken from the workflow (server's; it cannot write)."""
        return self.root / "models"

    @property
    def results(self) -> Path:
        """Sites' results being received and handed to the workflow, which may read them only."""
        return self.root / "results"

    @property
    def resume(self) -> Path:
        """The checkpoint a resumed job starts from (``checkpoint.json``, ``model.safetensors``),
        written by the server from the store and the blob store; the workflow reads it only."""
        return self.root / "resume"

    @property
    def workspace(self) -> Path:
        """The job's result: global model, metrics, logs. Downloaded as ``workspace/``. Only the
        server writes here: the workflow's files arrive from ``out`` once it has ended."""
        return self.root / "workspace"

    def site_log(self, site: str) -> Path:
        return self.workspace / site / "log.txt"

    @property
    def server_log(self) -> Path:
        return self.workspace / "server" / "log.txt"
