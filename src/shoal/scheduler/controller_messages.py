"""The workflow's messages to the server, checked before anything acts on them.

A job's workflow is the job's code (a custom one is the submitter's own), so what it says on
its channel is input like a site's: a field of the wrong type, a site the job does not have, a
status the workflow may not choose, or a path outside its folder must end the job with a
reason, never become a server traceback, a file the server serves, or a job left RUNNING.
"""

from __future__ import annotations

import re
from dataclasses import replace

from shoal.wire.channel import METRIC_KEY_MAX
from shoal.wire.controller import RoundCheckpoint, RoundDone, Task, WorkflowError
from shoal.wire.status import JobStatus, brief

TASK_ID_RE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
TASK_NAME_MAX = 128
ROUND_METRICS_MAX = 256  # aggregated metrics a round may report
#: The statuses a workflow may end its job with; the others are the server's to give.
WORKFLOW_END_STATUSES = (JobStatus.FAILED, JobStatus.FINISHED_EXCEPTION)


class BadControllerMessage(ValueError):
    """The workflow sent a message the server will not act on."""


def checked_task(task: Task, job_sites: set[str]) -> Task:
    """``task`` (typed by ``shoal.wire.controller``) if the server may act on it: a task id it
    can name files by, sites of this job (each once, sorted), a task name of bounded length,
    counts >= 0."""
    if not TASK_ID_RE.fullmatch(task.task_id):
        raise BadControllerMessage(f"a task id must be 1-64 letters or digits, not {task.task_id[:80]!r}")
    if not task.model_path:
        raise BadControllerMessage("a task must name its model file")
    if not all(s in job_sites for s in task.sites):
        raise BadControllerMessage(
            f"a task's sites must be sites of this job ({', '.join(sorted(job_sites))})"
        )
    if not 0 < len(task.task_name) <= TASK_NAME_MAX:
        raise BadControllerMessage(f"a task name must be text of 1-{TASK_NAME_MAX} characters")
    for name in ("round", "total_rounds"):
        value = getattr(task, name)
        if value is not None and value < 0:
            raise BadControllerMessage(f"a task's {name} must be a whole number >= 0, not {value}")
    return replace(task, sites=sorted(set(task.sites)))


def round_metrics(message: RoundDone) -> dict[str, float]:
    """A finished round's aggregated metrics: names to numbers (anything else is left out)."""
    kept = {
        k: v
        for k, v in message.metrics.items()
        if 0 < len(k) <= METRIC_KEY_MAX and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return dict(list(kept.items())[:ROUND_METRICS_MAX])


def error_message(message: WorkflowError, job_sites: set[str]) -> tuple[JobStatus, dict[str, str]]:
    """The workflow's last word when the job failed: its status (one a workflow may give) and
    the error, blaming a site of the job or the server."""
    status = next(
        (s for s in WORKFLOW_END_STATUSES if s.value == message.status), JobStatus.FINISHED_EXCEPTION
    )
    site = message.site
    error = {
        "site": site if site is not None and site in job_sites else "server",
        "type": brief(message.type, 100) if message.type else "Error",
        "message": brief(message.message),
    }
    return status, error


def checked_checkpoint(message: RoundCheckpoint) -> RoundCheckpoint:
    """A finished round's checkpoint (typed by ``shoal.wire.controller``) if the server may act
    on it: a round >= 0 and a model file named (taken out of the workflow's folder later)."""
    if message.round < 0:
        raise BadControllerMessage(f"a checkpoint's round must be a whole number >= 0, not {message.round}")
    if not message.model_path:
        raise BadControllerMessage("a checkpoint must name its model file")
    return message
