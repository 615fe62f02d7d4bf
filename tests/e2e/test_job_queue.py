"""The server's bound on jobs running at once (SHOAL_MAX_RUNNING_JOBS): the rest wait in order
of submission, their status_reason saying why, and each starts when one ends."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.jobs import slow_job
from tests.federation import Federation, own_federation

pytestmark = pytest.mark.e2e


def _meta(fed: Federation, job_id: str) -> dict[str, Any]:
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    meta: dict[str, Any] = doc["data"]
    return meta


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_jobs_past_the_bound_wait_in_order_and_say_why(tmp_path: Path) -> None:
    job = slow_job(tmp_path / "slow", rounds=4, delay=0.1)
    with own_federation(tmp_path / "home", env={"SHOAL_MAX_RUNNING_JOBS": "1"}) as fed:
        ids = []
        for _ in range(3):
            code, doc = fed.cli.json("job", "submit", "-j", job)
            assert code == 0, doc
            ids.append(str(doc["data"]["job_id"]))
        # While the first runs, the last waits, and says it is the bound it waits for.
        deadline = time.monotonic() + 30
        reason = ""
        while time.monotonic() < deadline:
            last = _meta(fed, ids[-1])
            reason = last["status_reason"]
            if last["status"] == "SUBMITTED" and "already running (limit 1)" in reason:
                break
            time.sleep(0.05)
        assert reason == "waiting: 1 jobs already running (limit 1)", reason
        metas = []
        for job_id in ids:
            code, doc = fed.cli.json("job", "wait", job_id, timeout=180)
            assert code == 0, doc
            metas.append(_meta(fed, job_id))
    assert [m["status"] for m in metas] == ["FINISHED_OK"] * 3
    spans = [(_ts(m["start_time"]), _ts(m["end_time"])) for m in metas]
    # in the order they were submitted, one after another: none started before the last ended
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans


def test_a_bound_below_one_stops_the_server_at_start(tmp_path: Path) -> None:
    from tests.conftest import Cli
    from tests.federation import start_federation

    home = tmp_path / "home"
    try:
        with pytest.raises(AssertionError):
            start_federation(home, env={"SHOAL_MAX_RUNNING_JOBS": "0"})
    finally:
        Cli(home).run("poc", "stop", "--workspace", home / "poc")
    log = (home / "poc" / "logs" / "server.log").read_text()
    assert "INVALID_ARGS" in log and "SHOAL_MAX_RUNNING_JOBS" in log, log[-2000:]
