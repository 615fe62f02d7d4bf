"""The server's view of a job: its own fields always win over what a meta.json held."""

from __future__ import annotations

from typing import Any, cast

from shoal.scheduler.runner import JobRun
from shoal.server.views import job_meta, job_row
from shoal.store.base import JobRecord, Submitter
from shoal.wire.jobdef import SERVER_META_KEYS
from shoal.wire.status import JobStatus


def record(meta: dict[str, Any]) -> JobRecord:
    return JobRecord(
        job_id=7,
        study="default",
        name="hello",
        status=JobStatus.RUNNING,
        status_reason="",
        submitter=Submitter("a@x.org", "x.org", "lead"),
        submit_time=1.0,
        start_time=2.0,
        end_time=None,
        meta=meta,
        content_sha256="0" * 64,
        first_error=None,
        cloned_from=None,
    )


def a_run() -> JobRun:
    """A real JobRun as the scheduler makes it, with a notice; only its progress is read here."""
    run = JobRun(cast(Any, None), 7, cast(Any, None), "app", {"site-1": "app"}, 1)
    run.progress.notices.append("a notice")
    return run


def test_every_field_the_server_shows_is_one_meta_json_may_not_set() -> None:
    """Drift guard: a field added to the job view must join SERVER_META_KEYS, or submit
    would let a meta.json set it (``"progress": "oops"`` broke meta, wait and monitor)."""
    job = record({"name": "hello", "fab": {"id": "x/app"}})
    shown = set(job_meta(job, a_run(), 3.0)) | set(job_row(job, 3.0))
    assert {"progress", "notices"} <= shown
    assert shown - {"name", "fab"} <= SERVER_META_KEYS


def test_a_job_stored_before_the_check_still_shows_the_servers_values() -> None:
    job = record({"name": "hello", "progress": "oops", "notices": 5, "status": "FAKE", "fab": "oops"})
    assert "progress" not in job_meta(job, None, 3.0) and "notices" not in job_meta(job, None, 3.0)
    shown = job_meta(job, a_run(), 3.0)
    assert isinstance(shown["progress"], dict) and shown["notices"] == ["a notice"]
    assert shown["status"] == "RUNNING"
    assert job_row(job, 3.0)["fab"] is None
