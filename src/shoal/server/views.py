"""How a job looks from outside: the JSON the admin API returns for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.wire.jobdef import SERVER_META_KEYS
from shoal.wire.jsonout import dumps

if TYPE_CHECKING:
    from shoal.scheduler.runner import JobRun
    from shoal.store.base import JobRecord


def json_response(data: Any, status: int = 200) -> web.Response:
    """Every JSON answer of the server: strict JSON (a NaN metric is null, shoal.wire.jsonout)."""
    return web.json_response(data, status=status, dumps=dumps)


def iso(ts: float | None) -> str:
    """UTC ISO-8601 with offset, or "" when the moment has not happened."""
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else ""


def duration(job: JobRecord, now: float) -> tuple[str, float | None]:
    """(text, seconds) from start to end, or to now while running; "N/A" before it starts."""
    if job.start_time is None:
        return "N/A", None
    end = job.end_time if job.end_time is not None else now
    seconds = max(0.0, end - job.start_time)
    return str(timedelta(seconds=round(seconds, 3))), round(seconds, 3)


def job_meta(
    job: JobRecord, run: JobRun | None, now: float, elsewhere: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Every field a user may need, flat; the job's own meta.json fields come first.
    ``elsewhere``: for a job another replica runs, that replica and the progress it last kept
    with its lease (decisions/0041), shown as the progress, with ``progress.replica``."""
    text, seconds = duration(job, now)
    # Submit refuses meta.json keys the server sets (SERVER_META_KEYS); a job stored before that
    # check may still hold one, and it must not stand in for the server's own value.
    out: dict[str, Any] = {
        k: v for k, v in job.meta.items() if k != "submit_token" and k not in SERVER_META_KEYS
    }
    out.update(
        {
            "job_id": str(job.job_id),
            "name": job.name,
            "job_name": job.name,
            "status": job.status.value,
            "status_reason": job.status_reason,
            "study": job.study,
            "submitter_name": job.submitter.name,
            "submitter_org": job.submitter.org,
            "submitter_role": job.submitter.role,
            "submit_time": job.submit_time,
            "submit_time_iso": iso(job.submit_time),
            "start_time": iso(job.start_time),
            "end_time": iso(job.end_time),
            "duration": text,
            "duration_s": seconds,
            "first_error": job.first_error,
            "cloned_from": str(job.cloned_from) if job.cloned_from is not None else None,
        }
    )
    if run is not None:
        out["progress"] = {
            "current_round": run.progress.current_round,
            "round": run.progress.round,
            "total_rounds": run.progress.total_rounds,
            "last_metrics": run.progress.last_metrics,
            "last_metrics_round": run.progress.last_metrics_round,
            "sites": dict(run.progress.site_status),
            "stats": run.progress.as_stats(),
        }
        if run.progress.privacy is not None:
            out["privacy_spent"] = run.progress.privacy
        if run.progress.notices:
            out["notices"] = list(run.progress.notices)
    elif elsewhere is not None and not job.status.terminal:
        replica, said = elsewhere
        notices = said.pop("notices", None)
        out["progress"] = {**said, "replica": replica}
        if notices:
            out["notices"] = list(notices)
    return out


def _fab_of(job: JobRecord) -> dict[str, Any] | None:
    """The app bundle a job came from, if meta.json recorded one as ``shoal run`` does."""
    fab = job.meta.get("fab")
    return fab if isinstance(fab, dict) else None


def job_row(job: JobRecord, now: float, run: JobRun | None = None) -> dict[str, Any]:
    """One line of ``job list``; with the job's ``run`` (running, or kept since it ended) its
    round, in the same words as meta's ``progress``, plus the rounds done."""
    text, seconds = duration(job, now)
    row: dict[str, Any] = {
        "job_id": str(job.job_id),
        "job_name": job.name,
        "status": job.status.value,
        "submitter_name": job.submitter.name,
        "submitter_org": job.submitter.org,
        "submit_time": iso(job.submit_time),
        "duration": text,
        "duration_s": seconds,
        "study": job.study,
        "start_time": iso(job.start_time),
        "end_time": iso(job.end_time),
        "content_sha256": job.content_sha256,
        "fab": _fab_of(job),
    }
    if run is not None:
        row["progress"] = {
            "current_round": run.progress.current_round,
            "round": run.progress.round,
            "total_rounds": run.progress.total_rounds,
            "rounds_done": run.progress.rounds_done,
        }
    return row
