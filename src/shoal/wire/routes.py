"""Every URL path of the admin API and the site API, defined once.

The server's route tables (``shoal.server.*routes*``, ``admin_*``) register these templates, and
the SDK client (``shoal.api.client``) and the site agent fill them in with ``fill(...)``, which
quotes each value: the two sides cannot disagree on a path, and a grep for a constant finds both
ends. Standard library only (the CLI's start-up path imports it).
"""

from __future__ import annotations

# --- the admin API (admin certificates only) ---------------------------------------------------
HEALTH = "/api/v1/health"
JOBS = "/api/v1/jobs"
JOB = "/api/v1/jobs/{job_id}"
JOB_WAIT = "/api/v1/jobs/{job_id}/wait"
JOB_RESULT = "/api/v1/jobs/{job_id}/result"
JOB_ABORT = "/api/v1/jobs/{job_id}/abort"
JOB_CLONE = "/api/v1/jobs/{job_id}/clone"
JOB_EVENTS = "/api/v1/jobs/{job_id}/events"
JOB_STATS = "/api/v1/jobs/{job_id}/stats"
JOB_SERIES = "/api/v1/jobs/{job_id}/series"
JOB_RIGHTS = "/api/v1/jobs/{job_id}/rights"
JOB_LOGS = "/api/v1/jobs/{job_id}/logs"
JOB_LOG_CONFIG = "/api/v1/jobs/{job_id}/log-config"
SYSTEM_STATUS = "/api/v1/system/status"
SYSTEM_SITES = "/api/v1/system/sites"
SITE_REMOVE = "/api/v1/system/sites/{site}/remove"
SITE_ACTION = "/api/v1/system/sites/{site}/{action}"
METRICS = "/metrics"

# --- the site API (site certificates only) -----------------------------------------------------
SITE_HEALTH = "/site/v1/health"
SITE_CHANNEL = "/site/v1/ws"
SITE_ARCHIVE = "/site/v1/jobs/{job_id}/archive"
SITE_TASK_MODEL = "/site/v1/jobs/{job_id}/tasks/{task_id}/model"
SITE_TASK_RESULT = "/site/v1/jobs/{job_id}/tasks/{task_id}/result"
SITE_JOB_LOG = "/site/v1/jobs/{job_id}/log"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(value: str) -> str:
    """Percent-encode all but RFC 3986's unreserved characters, as ``urllib.parse.quote(value,
    safe="")`` does; importing ``urllib.parse`` (it brings ``ipaddress``) is ~5 ms of a CLI call."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode())


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, quoted (a ``/`` too)."""
    return template.format(**{k: quote(v) for k, v in values.items()})
