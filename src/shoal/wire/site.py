"""The messages between the server and a site agent (the site channel, a WebSocket).

The agent (``shoal.site.agent``, ``shoal.site.job``) says hello, then reports on the jobs it
runs; the server (``shoal.server.site_routes`` receives, ``shoal.scheduler.runner`` and
``shoal.server.admin_system`` send) deploys jobs, pushes tasks, ends them, and answers inline
results. A site may be hostile: what the server accepts beyond the types here (lengths, the
policy's keys, log file names) is checked by ``shoal.server.site_messages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.wire.messages import AGENT, SERVER, SITE, Message, record, register

# --- site agent -> server ----------------------------------------------------------------------


@register(SITE, "hello", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """The first message of every channel: who the agent is, what it serves and still runs."""

    version: str = ""
    policy: dict[str, Any] = field(default_factory=dict)  # site_policy.json less its data paths
    resources: Any = None  # what it declares in local/resources.json (shoal.wire.resources)
    jobs: list[str] = field(default_factory=list)  # jobs it still runs (after a reconnect)

    @property
    def studies(self) -> frozenset[str] | None:
        """The studies the site serves; None: all."""
        studies = self.policy.get("studies")
        return None if studies is None else frozenset(studies)


@dataclass(frozen=True, slots=True)
class JobReport(Message):
    """A report about one job the site takes part in; the base of every report but hello."""

    job_id: str


@register(SITE, "ready", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Ready(JobReport):
    """The job's script started at the site."""


@register(SITE, "ended", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class Ended(JobReport):
    """The site's part of the job has ended (its log uploaded)."""


@register(SITE, "log", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class LogChunk(JobReport):
    """A piece of the job's live log at the site."""

    data: str
    file: str = "log.txt"  # log.txt (the script's raw output) or log.json (its records)


@register(SITE, "metric", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class LoggedMetric(JobReport):
    """A metric the site's script logged with ``flare.log_metric``."""

    key: str
    value: float  # NaN and infinities pass: a diverged loss is news, not a malformed message
    step: int | None = None


@register(SITE, "notice", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class SiteNotice(JobReport):
    """Something a user should see in the job's meta, said by the site."""

    message: str


@record
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What went wrong: the error's kind and its message."""

    type: str = "Error"
    message: str = "failed"


@register(SITE, "failed", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class JobFailed(JobReport):
    """The job's script failed at the site (or could not start)."""

    error: ErrorInfo = field(default_factory=ErrorInfo)


@register(SITE, "result", sender=AGENT, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class InlineResult(JobReport):
    """A small result inside the channel (INLINE_BYTES), answered by ``ResultAck``. ``header``
    is checked on the way in as a PUT's is (``shoal.wire.results``): a bad one is answered
    "not taken" and the PUT that follows reports it."""

    task_id: str
    data: str  # base64
    header: dict[str, Any] = field(default_factory=dict)


# --- server -> site agent ----------------------------------------------------------------------


@register(SITE, "welcome", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The answer to a good hello."""

    project: str = ""


@register(SITE, "deploy", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class Deploy(Message):
    """Run the job's ``app`` at this site: fetch its archive (checked against ``archive_sha256``)
    and start its script, on the GPUs the job holds there."""

    job_id: str
    app: str
    study: str = "default"
    archive_sha256: str | None = None
    gpus: list[str] | None = None


@register(SITE, "task", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class TaskForSite(Message):
    """A task for the site's script; its model rides along (base64) when small, else it is
    fetched from the site API."""

    job_id: str
    task_id: str
    task_name: str = "train"
    round: int | None = None
    total_rounds: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


@register(SITE, "log_config", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class SiteLogConfig(Message):
    """A log level or mode for the job's script at the site, live."""

    job_id: str
    setting: str


@register(SITE, "result_ack", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class ResultAck(Message):
    """Whether the server took an inline result; if not, the site sends it by PUT."""

    job_id: str
    task_id: str
    ok: bool = False
    error_code: str | None = None


@register(SITE, "end", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class EndJob(Message):
    """The job is over: stop the script politely, upload its log, confirm with ``Ended``."""

    job_id: str
    reason: str = "end"


@register(SITE, "abort", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class AbortJob(Message):
    """Kill the job's process group now, upload its log, confirm with ``Ended``."""

    job_id: str
    reason: str = "abort"


@register(SITE, "restart", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class RestartAgent(Message):
    """The operator asks the agent to restart (``shoal system restart-site``)."""

    reason: str = ""


@register(SITE, "shutdown", sender=SERVER, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class ShutdownAgent(Message):
    """The operator asks the agent to stop (``shoal system shutdown-site``)."""

    reason: str = ""
