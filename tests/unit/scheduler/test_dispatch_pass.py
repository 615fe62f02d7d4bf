"""A dispatch pass is robust per job and per site: one that cannot be judged never stops the others.

Against a real SQLite store: the records here are written past the submit checks on purpose (a
record an older server wrote, a bug), which no API request can produce.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shoal.scheduler.scheduler import Scheduler
from shoal.scheduler.sites import ConnectedSite, SiteRegistry
from shoal.store.base import Submitter
from shoal.store.blobs import BlobStore
from shoal.store.sqlite import SqliteJobStore

ALICE = Submitter(name="alice@example.com", org="acme", role="lead")
DEPLOY = {"app": ["@ALL"]}


def _site(name: str) -> ConnectedSite:
    async def send(message: dict[str, Any]) -> None:
        return None

    return ConnectedSite(name=name, org="acme", send=send)


def _pass(tmp_path: Path, sites: list[ConnectedSite], metas: list[dict[str, Any]]) -> list[str]:
    """Store jobs with ``metas`` (in that order), run one dispatch pass; each job's status_reason."""
    store = SqliteJobStore(tmp_path / "store.db")
    registry = SiteRegistry()
    for site in sites:
        registry.add(site)
    scheduler = Scheduler(store, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", registry)
    ids = [
        store.create_job(
            study="default", name=f"job{i}", meta=meta, content_sha256="a" * 64, submitter=ALICE
        )[0].job_id
        for i, meta in enumerate(metas)
    ]
    asyncio.run(scheduler._dispatch_pending())
    reasons = []
    for job_id in ids:
        job = store.get_job(job_id)
        assert job is not None
        reasons.append(job.status_reason or "")
    store.close()
    return reasons


def test_a_job_that_cannot_be_considered_does_not_stop_the_others(tmp_path: Path) -> None:
    bad, good = _pass(
        tmp_path,
        [_site("site-1")],
        [{"deploy_map": DEPLOY, "min_clients": "many"}, {"deploy_map": DEPLOY, "min_clients": 2}],
    )
    assert "could not consider it for dispatch" in bad and "ValueError" in bad, bad
    assert good == "waiting for sites: 2 needed, connected and deployable: site-1", good


def test_a_site_that_cannot_be_judged_costs_no_job_its_other_sites(tmp_path: Path) -> None:
    broken = _site("site-1")
    broken.studies = 5  # type: ignore[assignment]  # what a hello unchecked at the edge once left
    (reason,) = _pass(tmp_path, [broken, _site("site-2")], [{"deploy_map": DEPLOY, "min_clients": 2}])
    assert reason == "waiting for sites: 2 needed, connected and deployable: site-2", reason


def test_a_slot_freed_during_a_pass_goes_to_the_first_job_waiting_not_the_next_in_the_pass(
    tmp_path: Path,
) -> None:
    """The bound (1 here) holds back the first waiting job; a run ends while the pass awaits the
    write of its reason. The later jobs of that pass do not take the slot: the pass the run's
    end kicks starts the first one (issue 19: jobs start in the order they were submitted)."""
    store = SqliteJobStore(tmp_path / "store.db")
    registry = SiteRegistry()
    registry.add(_site("site-1"))
    scheduler = Scheduler(store, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", registry, max_running=1)
    ids = [
        store.create_job(
            study="default",
            name=f"job{i}",
            meta={"deploy_map": DEPLOY},
            content_sha256="a" * 64,
            submitter=ALICE,
        )[0].job_id
        for i in range(3)
    ]
    scheduler.runs[-1] = object()  # type: ignore[assignment]  # a job running before the pass
    started: list[int] = []

    async def dispatch(job: Any, *_: Any) -> None:
        started.append(job.job_id)
        scheduler.runs[job.job_id] = object()  # type: ignore[assignment]

    said = scheduler._set_reason

    async def set_reason(job: Any, reason: str) -> None:
        await said(job, reason)
        scheduler.runs.pop(-1, None)  # the running job ends while the pass writes

    scheduler._dispatch = dispatch  # type: ignore[method-assign,assignment]
    scheduler._set_reason = set_reason  # type: ignore[method-assign]
    asyncio.run(scheduler._dispatch_pending())
    assert started == []  # the second and third did not overtake the first
    asyncio.run(scheduler._dispatch_pending())  # the pass the run's end kicks
    assert started == [ids[0]]
    store.close()
