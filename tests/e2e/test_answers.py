"""The SDK client's answer types (shoal.api.answers) say what a real server sends: every key a
TypedDict requires is there, and nothing comes that it does not name (a job's meta also carries
its own meta.json fields). The CLI is type-checked against these types, so they must not drift."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from shoal.api import answers
from shoal.api.client import AdminClient
from shoal.api.kits import resolve_admin_kit
from shoal.wire.archive import zip_folder
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job

pytestmark = pytest.mark.e2e


def conforms(value: Mapping[str, Any], shape: Any, extra: Collection[str] = ()) -> list[str]:
    """What of ``value`` does not fit the TypedDict ``shape``: a required key it lacks, or a key
    the shape does not name (nor ``extra``)."""
    required, optional = set(shape.__required_keys__), set(shape.__optional_keys__)
    missing = [f"{shape.__name__} lacks {k!r}" for k in sorted(required - set(value))]
    unknown = [
        f"{shape.__name__} has no {k!r}" for k in sorted(set(value) - required - optional - set(extra))
    ]
    return missing + unknown


def test_the_answer_types_are_what_the_server_sends(federation: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=30, delay=0.05, meta={"min_clients": 1})
    own_keys = set(json.loads((job / "meta.json").read_text()))
    archive = tmp_path / "job.zip"
    zip_folder(job, archive)
    problems: list[str] = []
    with AdminClient(resolve_admin_kit(None, str(federation.kits / "admin@example.com"))) as client:
        problems += conforms(client.health(), answers.Health)
        submitted = client.submit_job(archive, "default")
        problems += conforms(submitted, answers.Submitted)
        job_id = submitted["job_id"]
        deadline = time.monotonic() + 60
        meta = client.get_job(job_id, "default")
        while "progress" not in meta or meta["progress"]["current_round"] is None:
            assert time.monotonic() < deadline, meta
            time.sleep(0.1)
            meta = client.get_job(job_id, "default")
        problems += conforms(meta, answers.JobMeta, own_keys)
        problems += conforms(meta["progress"], answers.MetaProgress)
        problems += conforms(meta["progress"]["stats"], answers.Stats)
        (row,) = client.list_jobs("default", id_prefix=job_id)
        problems += conforms(row, answers.JobRow)
        assert "progress" in row, row
        problems += conforms(row["progress"], answers.RowProgress)
        events = client.job_events(job_id, "default", -1, 0.0)
        problems += conforms(events, answers.JobEvents) + conforms(events["job"], answers.JobMeta, own_keys)
        stats = client.job_stats(job_id, "default")
        problems += conforms(stats, answers.JobStats)
        problems += conforms(client.log_config(job_id, "default", "INFO"), answers.LogConfigApplied)
        status = client.system_status()
        problems += conforms(status, answers.SystemStatus) + conforms(status["server"], answers.ServerStatus)
        problems += [p for s in status["sites"] for p in conforms(s, answers.ConnectedSite)]
        problems += [p for c in status["certificates"] for p in conforms(c, answers.Certificate)]
        sites = client.system_sites()
        problems += conforms(sites, answers.Sites)
        problems += [p for s in sites["sites"] for p in conforms(s, answers.SiteRow)]
        problems += conforms(client.abort_job(job_id, "default"), answers.Aborted)
        problems += conforms(client.job_logs(job_id, "default", "all"), answers.JobLogs)
        finished, waited = client.wait_job(job_id, "default")
        assert finished and waited["status"] == "ABORTED", waited
        problems += conforms(waited, answers.JobMeta, own_keys)
        cloned = client.clone_job(job_id, "default")
        problems += conforms(cloned, answers.Cloned)
        clone_ended, _ = client.wait_job(cloned["new_job_id"], "default", timeout=120)
        assert clone_ended, "the clone (a short job) did not end"
        problems += conforms(client.delete_job(cloned["new_job_id"], "default"), answers.Deleted)
    assert problems == []


def test_the_check_finds_a_missing_and_an_unknown_key() -> None:
    assert conforms({"job_id": "1", "surprise": True}, answers.Submitted) == [
        "Submitted lacks 'created'",
        "Submitted has no 'surprise'",
    ]
