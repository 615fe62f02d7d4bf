"""The messages between the server and a job's workflow process (the controller channel).

The workflow (``shoal.workflows.base.WorkflowContext``) sends tasks, the end of each task and
round, what it spent of a privacy budget, the end of its training, and its last word; the server
(``shoal.scheduler.runner.JobRun``) sends it the sites' results and metrics, sites that dropped
out or came back, that they all ended, and log settings. In ``shoal simulate`` the simulator's
``PoolTransport`` stands in for the server. What the server accepts from a workflow beyond the
types here (sites of the job, task ids, paths in its folder) is checked by
``shoal.scheduler.controller_messages``.
A site's result reaches the workflow as a file (``Result``) or, when it came inline and is small,
as its bytes in the message (``ResultBytes``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from shoal.wire.messages import CONTROLLER, FLAT, SERVER, WORKFLOW, Message, register
from shoal.wire.results import ResultInfo

# --- workflow -> server ------------------------------------------------------------------------


@register(CONTROLLER, "task", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Task(Message):
    """Send the model in ``model_path`` (a file in the workflow's run folder) to ``sites``.

    ``checkpoint_round``: the model is the one the workflow checkpointed for that round (its
    ``RoundCheckpoint``, just before), which the server already took: the server sends that
    file, and the workflow writes no second copy of the same model (decisions/0045)."""

    task_id: str
    model_path: str
    sites: list[str]
    task_name: str = "train"
    round: int | None = None
    total_rounds: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    checkpoint_round: int | None = None


@register(CONTROLLER, "task_closed", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class TaskClosed(Message):
    """The workflow collects no more results for this task (its round ended)."""

    task_id: str


@register(CONTROLLER, "release", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Release(Message):
    """A result the workflow has folded in (or will never read): its file may go."""

    task_id: str
    site: str
    path: str = ""


@register(CONTROLLER, "round", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class RoundDone(Message):
    """A finished round's aggregated metrics (for meta, stats, monitor and trackers)."""

    round: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)
    time: float | None = None


@register(CONTROLLER, "privacy", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class PrivacySpent(Message):
    """The privacy spent so far, per site and for the job (``job meta``)."""

    spent: dict[str, Any] = field(default_factory=dict)


@register(CONTROLLER, "done", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Done(Message):
    """The workflow's last word when it finished; ``reason`` if it ended early on purpose."""

    reason: str | None = None


@register(CONTROLLER, "finishing", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Finishing(Message):
    """The workflow's training is over and it sends no more tasks: the sites may end their part
    now. The server answers ``SitesEnded`` once they did, so that the workflow's
    metrics_summary.json holds every metric their scripts logged, also after their last result
    (decisions/0053)."""


@register(CONTROLLER, "error", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class WorkflowError(Message):
    """The workflow's last word when the job failed: the status it asks for (one a workflow may
    give), the error, and the site it blames (None: the server)."""

    status: str = "FINISHED_EXCEPTION"
    type: str = "Error"
    message: str = ""
    site: str | None = None


@register(CONTROLLER, "resumable", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Resumable(Message):
    """Said once at start: whether the workflow can resume after a server restart
    (``Workflow.resumable``, decisions/0040), and its class name for the reason if it cannot."""

    value: bool
    workflow: str = ""


@register(CONTROLLER, "checkpoint", sender=WORKFLOW, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class RoundCheckpoint(Message):
    """A finished round's checkpoint: the global model in ``model_path`` (a file in the
    workflow's run folder, which the server takes into its blob store) and the state to resume
    from, a JSON object (``WorkflowContext.checkpoint``)."""

    round: int
    model_path: str
    state: dict[str, Any] = field(default_factory=dict)


# --- server -> workflow ------------------------------------------------------------------------


@register(CONTROLLER, "result", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class Result(Message):
    """A site's checked result for a task: its file (the workflow may read it, not change it, and
    says ``Release`` once it has folded it in). A small one may come as ``ResultBytes`` instead."""

    task_id: str
    site: str
    path: str
    info: ResultInfo = field(default_factory=ResultInfo, metadata={FLAT: True})


@register(CONTROLLER, "result_bytes", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class ResultBytes(Message):
    """A site's checked small result (at most ``INLINE_BYTES``) carried in the message itself,
    base64 as the site sent it inline: no file was written, so there is nothing to release
    (decisions/0044)."""

    task_id: str
    site: str
    data: str
    info: ResultInfo = field(default_factory=ResultInfo, metadata={FLAT: True})

    def payload(self) -> bytes:
        """The safetensors bytes (the server checked them before sending)."""
        return base64.b64decode(self.data)


@register(CONTROLLER, "metric", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class SiteMetric(Message):
    """A metric a site's script logged with ``flare.log_metric`` (into metrics_summary.json)."""

    site: str
    key: str
    value: float
    step: int | None = None


@register(CONTROLLER, "sites_ended", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class SitesEnded(Message):
    """The answer to ``Finishing``: every site confirmed the end of its part or is gone, and
    every metric they logged was sent before this. ``stragglers``: sites that did not confirm
    within the server's grace (their late metrics may be missing)."""

    stragglers: list[str] = field(default_factory=list)


@register(CONTROLLER, "site_failed", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class SiteFailed(Message):
    """A site dropped out of the job; the workflow decides whether the job can go on."""

    site: str
    reason: str = "site failed"
    type: str = "Error"  # the error's kind (the simulator reports it as the job's first error)


@register(CONTROLLER, "site_joined", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class SiteJoined(Message):
    """A site that dropped out is back: it takes part from the next task on."""

    site: str


@register(CONTROLLER, "log_config", sender=SERVER, receiver=WORKFLOW)
@dataclass(frozen=True, slots=True)
class WorkflowLogConfig(Message):
    """A log level or mode for the workflow process, live (``shoal job log-config``)."""

    setting: str
