"""The workflow's messages to the server, checked before anything acts on them.

A job's workflow is the job's code (a custom one is the submitter's own), so what it says on
its channel is input like a site's: a field of the wrong type, a site the job does not have, a
status the workflow may not choose, or a path outside its folder must end the job with a
reason, never become a server traceback, a file the server serves, or a job left RUNNING.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shoal.wire.channel import METRIC_KEY_MAX
from shoal.wire.status import JobStatus, brief

TASK_ID_RE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
TASK_NAME_MAX = 128
ROUND_METRICS_MAX = 256  # aggregated metrics a round may report
#: The statuses a workflow may end its job with; the others are the server's to give.
WORKFLOW_END_STATUSES = (JobStatus.FAILED, JobStatus.FINISHED_EXCEPTION)


class BadControllerMessage(ValueError):
    """The workflow sent a message the server will not act on."""


@dataclass(frozen=True)
class TaskMessage:
    task_id: str
    model_path: str
    sites: list[str]
    task_name: str
    round: int | None
    total_rounds: int | None
    meta: dict[str, Any]


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise BadControllerMessage(f"a task's {name} must be a whole number >= 0, not {str(value)[:40]!r}")
    return value


def task_message(msg: dict[str, Any], job_sites: set[str]) -> TaskMessage:
    task_id, model_path, sites = msg.get("task_id"), msg.get("model_path"), msg.get("sites")
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise BadControllerMessage(f"a task id must be 1-64 letters or digits, not {str(task_id)[:80]!r}")
    if not isinstance(model_path, str) or not model_path:
        raise BadControllerMessage("a task must name its model file")
    if not isinstance(sites, list) or not all(isinstance(s, str) and s in job_sites for s in sites):
        raise BadControllerMessage(
            f"a task's sites must be sites of this job ({', '.join(sorted(job_sites))})"
        )
    name = msg.get("task_name", "train")
    if not isinstance(name, str) or not 0 < len(name) <= TASK_NAME_MAX:
        raise BadControllerMessage(f"a task name must be text of 1-{TASK_NAME_MAX} characters")
    meta = msg.get("meta") or {}
    if not isinstance(meta, dict):
        raise BadControllerMessage("a task's meta must be a JSON object")
    return TaskMessage(
        task_id=task_id,
        model_path=model_path,
        sites=sorted(set(sites)),
        task_name=name,
        round=_count(msg.get("round"), "round"),
        total_rounds=_count(msg.get("total_rounds"), "total_rounds"),
        meta=meta,
    )


def round_metrics(msg: dict[str, Any]) -> dict[str, float]:
    """A finished round's aggregated metrics: names to numbers (anything else is left out)."""
    raw = msg.get("metrics")
    if not isinstance(raw, dict):
        return {}
    kept = {
        k: v
        for k, v in raw.items()
        if isinstance(k, str)
        and 0 < len(k) <= METRIC_KEY_MAX
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }
    return dict(list(kept.items())[:ROUND_METRICS_MAX])


def error_message(msg: dict[str, Any], job_sites: set[str]) -> tuple[JobStatus, dict[str, str]]:
    """The workflow's last word when the job failed: its status (one a workflow may give) and
    the error, blaming a site of the job or the server."""
    status = next(
        (s for s in WORKFLOW_END_STATUSES if s.value == msg.get("status")), JobStatus.FINISHED_EXCEPTION
    )
    site = msg.get("site")
    kind = msg.get("type")
    error = {
        "site": site if isinstance(site, str) and site in job_sites else "server",
        "type": brief(kind, 100) if isinstance(kind, str) and kind else "Error",
        "message": brief(str(msg.get("message", ""))),
    }
    return status, error
