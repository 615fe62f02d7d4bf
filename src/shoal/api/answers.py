"""The shapes of the admin API's answers, as the SDK client (``shoal.api.client``) returns them.

For type checkers only: ``shoal.api.client`` and the CLI import this module under
``TYPE_CHECKING``, so a CLI call never loads ``typing`` for it (~6 ms, decisions/0004). At run
time every answer is the plain dict the server sent; these say which keys it has, so a
misspelled key in the CLI is a mypy error instead of a ``KeyError`` in a user's terminal. The
server builds the same keys in ``shoal.server.views`` and its route handlers.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated
# annotations (``__optional_keys__``, which tests/e2e/test_answers.py checks the server against).
from typing import Any, NotRequired, TypedDict


class Health(TypedDict):
    ok: bool


class Submitted(TypedDict):
    job_id: str
    #: False when a submit token matched an earlier submit of the same content: the same job.
    created: bool


class RowProgress(TypedDict):
    current_round: int | None
    round: int | None
    total_rounds: int | None
    rounds_done: int


class JobRow(TypedDict):
    """One job of ``GET /api/v1/jobs``."""

    job_id: str
    job_name: str
    status: str
    submitter_name: str
    submitter_org: str
    submit_time: str
    duration: str
    duration_s: float | None
    study: str
    start_time: str
    end_time: str
    content_sha256: str
    fab: dict[str, Any] | None
    progress: NotRequired[RowProgress]


class Stats(TypedDict):
    current_round: int | None
    round: int | None
    total_rounds: int | None
    rounds_done: int
    last_metrics: dict[str, float | None]
    last_metrics_round: int | None
    tasks_sent: int
    results_received: int
    bytes_to_sites: int
    bytes_from_sites: int


class MetaProgress(TypedDict):
    current_round: int | None
    round: int | None
    total_rounds: int | None
    last_metrics: dict[str, float | None]
    last_metrics_round: int | None
    sites: dict[str, str]
    stats: Stats


class JobMeta(TypedDict):
    """``GET /api/v1/jobs/{id}``: the server's fields. The job's own meta.json fields (its
    ``deploy_map``, ``min_clients``, ...) come in the same object; read those with ``.get``."""

    job_id: str
    name: str
    job_name: str
    status: str
    status_reason: str
    study: str
    submitter_name: str
    submitter_org: str
    submitter_role: str
    submit_time: float
    submit_time_iso: str
    start_time: str
    end_time: str
    duration: str
    duration_s: float | None
    first_error: dict[str, Any] | None
    cloned_from: str | None
    #: From the job's meta.json, which submit checked (``shoal.wire.jobdef``).
    min_clients: NotRequired[int]
    deploy_map: NotRequired[dict[str, list[str]]]
    progress: NotRequired[MetaProgress]
    privacy_spent: NotRequired[dict[str, Any]]
    notices: NotRequired[list[str]]


class Waited(TypedDict):
    """``GET /api/v1/jobs/{id}/wait``: the job once it ended, or after the long poll's hold."""

    terminal: bool
    job: JobMeta


class JobEvents(TypedDict):
    """``GET /api/v1/jobs/{id}/events``: the job once it changed after ``since``."""

    version: int
    terminal: bool
    job: JobMeta


class Aborted(TypedDict):
    job_id: str
    status: str
    reason: str | None


class Deleted(TypedDict):
    job_id: str
    submit_records_marked_deleted: int


class Cloned(TypedDict):
    source_job_id: str
    new_job_id: str


class SiteStats(TypedDict, total=False):
    status: str | None
    metrics: dict[str, Any]


class JobStats(TypedDict):
    """``GET /api/v1/jobs/{id}/stats``: ``server`` unless one site was asked for, ``sites``
    unless the server was."""

    job_id: str
    status: str
    server: NotRequired[dict[str, Any]]
    sites: NotRequired[dict[str, dict[str, Any]]]


class JobLogs(TypedDict):
    job_id: str
    logs: dict[str, str]
    #: Which logs were cut to their last bytes (the server sends at most 5 MiB of each).
    capped: dict[str, bool]
    unavailable: dict[str, str]


class LogConfigApplied(TypedDict):
    job_id: str
    setting: str
    #: Per target (``server``, site names): ``sent``, or ``not connected``.
    applied: dict[str, str]


class ServerStatus(TypedDict):
    project: str
    running_jobs: list[str]
    version: str
    started_at: float
    uptime_s: float
    store_bytes: int


class ConnectedSite(TypedDict):
    name: str
    org: str
    connected_at: float
    version: str
    resources: dict[str, Any]
    jobs: list[str]
    #: the server replica holding the site's channel (decisions/0047); older servers send none
    replica: NotRequired[str]


class Certificate(TypedDict):
    name: str
    kind: str
    not_after: str | None
    days_left: int | None


class SystemStatus(TypedDict):
    server: ServerStatus
    sites: list[ConnectedSite]
    known_sites: list[str]
    certificates: list[Certificate]
    expiring: list[Certificate]


class SiteRow(TypedDict):
    """One site of ``GET /api/v1/system/sites``; the rest only while it is connected."""

    name: str
    connected: bool
    jobs: list[str]
    org: NotRequired[str]
    version: NotRequired[str]
    resources: NotRequired[dict[str, Any]]
    connected_at: NotRequired[float]
    last_contact: NotRequired[float]
    idle_s: NotRequired[float]
    replica: NotRequired[str]


class Sites(TypedDict):
    sites: list[SiteRow]


class SiteActed(TypedDict, total=False):
    """``POST /api/v1/system/sites/{site}/{action}``: ``removed`` and ``revoked_file`` for
    remove, ``action``, ``sent`` and ``replica`` (the one holding the site's channel, which
    sends the order) for restart and shutdown."""

    site: str
    removed: bool
    revoked_file: str
    action: str
    sent: bool
    replica: str
