"""A job run's tasks: which the workflow sent, which each site may answer now, and the files a
site's answer leaves in the job's ``results`` folder until the workflow is done with them.

Owned by ``shoal.scheduler.runner.JobRun`` (its ``task_book``); whether the run is ending, which
sites failed and which are in the job are the run's to say, so they come in as arguments.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.privacy.protections import filter_model_file
from shoal.sandbox.files import claim, give
from shoal.scheduler.jobpaths import JobPaths
from shoal.wire.controller import Task
from shoal.wire.models import SPARE_MODEL
from shoal.wire.site import TaskForSite


@dataclass
class TaskState:
    """A task the workflow sent. A site may answer it once, while it is open: until the workflow
    closes it (its round ended), a newer task goes to that site, or the job ends."""

    task_id: str
    model_path: Path
    sites: set[str]
    model_bytes: int = 0
    answered: set[str] = field(default_factory=set)
    closed: bool = False
    #: Sites that may have left a file for this task in ``results/`` (a partial upload, a result
    #: for the workflow): only theirs are looked for when a site moves on or the task closes. A
    #: round of small results sent inline leaves none, and 2,000 sites' removals of files that
    #: are not there cost the server ~50 ms a round.
    files: set[str] = field(default_factory=set)


class TaskBook:
    """The tasks of one run by id, and each site's latest task as sent."""

    def __init__(self, paths: JobPaths) -> None:
        self._paths = paths
        self.tasks: dict[str, TaskState] = {}
        # Each site's latest task as sent, to send again if the site returns within its grace
        # (only the latest: an inline model is up to 341 KiB of base64, not to be kept per round).
        self.latest: dict[str, tuple[TaskState, TaskForSite]] = {}

    async def take(
        self, checked: Task, checkpointed: Path | None, to_sites: Callable[[], dict[str, Any]]
    ) -> TaskState:
        """A task the workflow sent (checked): its model file taken out of the workflow's folder,
        never followed there, or, with ``checkpointed``, the checkpoint's model the server holds;
        the job's filters on what sites receive (``to_sites``) applied to it where the job's code
        cannot skip them; the task kept."""
        model = self._paths.models / f"{checked.task_id}.safetensors"
        if checkpointed is None:
            await asyncio.to_thread(claim, self._paths.run, checked.model_path, model)
        else:
            await asyncio.to_thread(os.replace, checkpointed, model)
        filters = to_sites()
        if filters:
            await asyncio.to_thread(filter_model_file, model, filters)
        task = TaskState(checked.task_id, model, set(checked.sites), model_bytes=model.stat().st_size)
        self.tasks[task.task_id] = task
        return task

    def sending(self, site: str, task: TaskState, out: TaskForSite) -> None:
        """``task`` goes to ``site`` as ``out``: the site's earlier task is over for it."""
        previous = self.latest.get(site)
        if previous is not None:
            self.drop_partial(previous[0], site)
        self.latest[site] = (task, out)

    def unanswered(self, site: str) -> TaskForSite | None:
        """The latest task sent to ``site`` if it has not answered it (to send again)."""
        latest = self.latest.get(site)
        return latest[1] if latest is not None and site not in latest[0].answered else None

    def result_path(self, task_id: str, site: str) -> Path:
        """Where a site's checked result for a task waits for the workflow (a server-made name)."""
        return self._paths.results / f"{task_id}-{site}.safetensors"

    def release_result(self, task_id: str, site: str, in_job: bool, failed: set[str]) -> None:
        """The workflow has folded a result in: its file goes (the workflow may only read it),
        handed to the workflow's folder as the file to write its next model over: its pages,
        written by the upload moments ago, take that model instead of fresh ones (decisions/0054).
        The workflow reads every result of its job, so the bytes it gets back are no news to it."""
        if task_id in self.tasks and in_job:
            give(self.result_path(task_id, site), self._paths.run, SPARE_MODEL)
        task = self.tasks.get(task_id)
        if task is not None:
            self.drop_model_once_served(task, failed)

    @staticmethod
    def drop_model_once_served(task: TaskState, failed: set[str]) -> None:
        """Every site of ``task`` has answered it or is gone (``failed``): its model is not
        served again."""
        # the lengths first: the subset test builds a set of every site, per result
        if len(task.answered) + len(failed) >= len(task.sites) and task.sites <= task.answered | failed:
            task.model_path.unlink(missing_ok=True)

    def task_for(self, site: str, task_id: str) -> TaskState | None:
        """The task ``task_id`` (as a site sent it) if it was sent to ``site`` and is not closed:
        its model may be fetched."""
        task = self.tasks.get(task_id)
        return task if task is not None and site in task.sites and not task.closed else None

    def open_task(self, site: str, task_id: str) -> TaskState | None:
        """The task ``task_id`` if ``site`` may answer it now, as far as the tasks say: sent to
        that site, the latest it was sent, not answered by it, not closed (the run adds: the job
        not ending)."""
        task = self.task_for(site, task_id)
        latest = self.latest.get(site)
        if task is None or site in task.answered:
            return None
        return task if latest is not None and latest[0] is task else None

    def partial_path(self, task: TaskState, site: str, kind: str = "part") -> Path:
        """Where ``site``'s upload for ``task`` gathers: named from the server's own records
        (a checked task id, a certificate's site name), never from a request. The site is noted
        as one that may leave files for the task (``TaskState.files``)."""
        task.files.add(site)
        return self._partial(task, site, kind)

    def _partial(self, task: TaskState, site: str, kind: str = "part") -> Path:
        return self._paths.results / f".{task.task_id}-{site}.{kind}"

    def drop_partial(self, task: TaskState, site: str) -> None:
        if site in task.files:
            self._partial(task, site).unlink(missing_ok=True)

    def close_task(self, task: TaskState) -> None:
        """The workflow is done with ``task`` (its round ended): no more results for it, its
        model is not served again, and what sites left of theirs (an upload cut off, a result
        not read) is removed."""
        task.closed = True
        task.model_path.unlink(missing_ok=True)
        for site in task.files:
            self.drop_partial(task, site)
            self.result_path(task.task_id, site).unlink(missing_ok=True)
