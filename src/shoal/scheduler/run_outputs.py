"""A job run's files as it ends: the workflow's outputs into the job's workspace, the workspace
where the blob store keeps files, and the run's own folders removed.

Called by ``shoal.scheduler.runner.JobRun`` once its workflow's process has ended, before the
job's status says so: whoever that status wakes finds the result in place and the scratch gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from shoal.sandbox.files import harvest, remove_tree
from shoal.scheduler.jobpaths import JobPaths
from shoal.wire.status import brief

if TYPE_CHECKING:
    from shoal.store.jobfiles import JobFiles

log = logging.getLogger("shoal.scheduler")


def take_outputs(paths: JobPaths, job_id: int, sites: Iterable[str]) -> list[str]:
    """The workflow's results into the job's workspace, now that its process has ended:
    regular files only, never replacing the server's own (its log, the ``sites``' logs).
    Returns what was not kept. Runs in a worker thread: it touches no loop state."""
    if not paths.out.is_dir():
        return []
    try:
        # The sites' and the server's log folders are the server's to fill: a workflow's
        # file there could pass for a site's log.
        skipped = harvest(paths.out, paths.workspace, frozenset({"server", "tensorboard", *sites}))
    except (OSError, RecursionError) as exc:  # the job's folder is its own to shape
        log.warning("job %s: taking the workflow's outputs failed: %s", job_id, exc)
        skipped = [f"its output folder could not be read: {type(exc).__name__}: {exc}"]
    return skipped


async def keep_outputs(job_files: JobFiles, job_id: int, notice: Callable[[str], None]) -> None:
    """The job's result where the blob store keeps files (the bucket: uploaded, then gone
    from local disk), before its status says it ended: a download that follows finds it.
    A failed upload leaves the files on this server's disk, which then serves them."""
    try:
        await asyncio.to_thread(job_files.keep, job_id)
    except Exception as exc:  # the job's outcome stands; where its files are is secondary
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        log.warning("job %s: keeping its files in the blob store failed: %s", job_id, detail)
        notice(f"server: the job's files stay on the server's disk: {brief(str(detail))}")


def cleanup_run_dir(paths: JobPaths, job_id: int) -> None:
    """What the job no longer needs: scratch, models in flight, results not taken. Removed
    without following links (the workflow could have left some)."""
    for folder in (paths.run, paths.models, paths.results, paths.out, paths.resume):
        try:
            remove_tree(folder)
        except OSError as exc:  # what is left is the job's own; the job is settled anyway
            log.warning("job %s: could not remove %s: %s", job_id, folder, exc)
