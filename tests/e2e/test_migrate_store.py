"""``shoal server migrate-store``: a server's SQLite store copied into a real PostgreSQL
(tests/pgserver.py), every job, status, reason, time, error, clone and submit-token record
(a deleted job's included) as it was; a non-empty target refused unless --merge, which then
copies nothing twice; refused while a server holds the workspace; the password never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.server.app import lock_workspace
from shoal.store.base import JobRecord, Submitter
from shoal.store.postgres import PostgresJobStore
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.status import JobStatus
from tests.conftest import Cli

pytestmark = pytest.mark.e2e
ALICE = Submitter("alice@example.com", "org-a", "lead")
BOB = Submitter("bob@example.com", "org-b", "member")


#: Every table is copied; those of replicas (leases, site sessions, heartbeats, site mail) are
#: empty in a sole server's SQLite store.
REPLICA_TABLES = {"job_leases": 0, "replicas": 0, "site_sessions": 0, "site_mail": 0}


def _fill(store: SqliteJobStore) -> None:
    """Jobs in every kind of state a store holds: pending, finished, failed with an error, a
    clone, submitted with tokens, one deleted (its token record stays, marked deleted)."""
    for i in range(12):
        job, _ = store.create_job(
            study="default" if i % 3 else "cancer",
            name=f"job-{i}",
            meta={"name": f"job-{i}", "min_clients": 2, "deploy_map": {"app": ["@ALL"]}, "i": i},
            content_sha256=f"{i:064x}",
            submitter=ALICE if i % 2 else BOB,
            submit_token=f"token-{i}" if i < 5 else None,
            content_hash=f"{i:064x}" if i < 5 else None,
        )
        if i % 4 == 1:
            store.transition(job.job_id, JobStatus.DISPATCHED, reason="deploying")
            store.transition(job.job_id, JobStatus.RUNNING, reason="running")
            store.transition(job.job_id, JobStatus.FINISHED_OK, reason="finished")
        elif i % 4 == 2:
            store.set_status_reason(job.job_id, "waiting for 2 sites")
        elif i % 4 == 3:
            store.transition(job.job_id, JobStatus.DISPATCHED, reason="deploying")
            store.set_first_error(job.job_id, {"site": "site-1", "type": "ValueError", "message": "boom ü"})
            store.transition(job.job_id, JobStatus.FAILED, reason="could not start")
    first = store.list_jobs(study=None)[0]
    store.create_job(
        study=first.study,
        name=first.name,
        meta=first.meta,
        content_sha256=first.content_sha256,
        submitter=ALICE,
        cloned_from=first.job_id,
    )
    doomed = store.find_by_submit_token("default", ALICE, "token-1")
    assert doomed is not None
    store.delete_job(doomed.job_id, deleted_by=BOB)


def _everything(store: Any) -> list[JobRecord]:
    jobs: list[JobRecord] = store.list_jobs(study=None)
    return jobs


def test_a_sqlite_store_moves_into_postgresql_whole_and_once(postgres: Any, tmp_path: Path) -> None:
    kit = tmp_path / "server"
    workspace = kit / "workspace"
    workspace.mkdir(parents=True)
    source = SqliteJobStore(workspace / "store.db")
    _fill(source)
    want = _everything(source)
    assert len(want) == 12
    url = postgres.new_database()
    cli = Cli(tmp_path / "home", {"SHOAL_STORE_URL": url})
    password = postgres.password

    code, doc = cli.json("server", "migrate-store", "-k", kit)
    assert code == 0, doc
    assert doc["data"]["copied"] == {
        "jobs": 12,
        "submit_tokens": 5,
        "job_checkpoints": 0,
        **REPLICA_TABLES,
    }, doc
    assert password not in str(doc) and "***" in doc["data"]["target"]

    target = PostgresJobStore(url)
    try:
        got = _everything(target)
        assert got == want  # every field of every job, in the same order
        for job in want:
            assert target.get_job(job.job_id) == job
        for i in (0, 2, 3, 4):
            sub = ALICE if i % 2 else BOB
            found = target.find_by_submit_token("default" if i % 3 else "cancer", sub, f"token-{i}")
            assert found is not None and found.name == f"job-{i}"
        with pytest.raises(ShoalError) as gone:
            target.find_by_submit_token("default", ALICE, "token-1")
        assert gone.value.code == "SUBMIT_TOKEN_JOB_DELETED"
        assert target.count_by_status() == source.count_by_status()
        # the copy is a working store: new jobs go after the copied ones
        new, _ = target.create_job(
            study="default", name="after", meta={}, content_sha256="f" * 64, submitter=ALICE
        )
        assert target.list_jobs(study=None, limit=1)[0].job_id == new.job_id
    finally:
        target.close()

    again = cli.run("server", "migrate-store", "-k", kit, "--format", "json")
    assert again.returncode == 4 and '"STORE_NOT_EMPTY"' in again.stdout, again.stdout + again.stderr
    assert password not in again.stdout + again.stderr
    code, doc = cli.json("server", "migrate-store", "-k", kit, "--merge")
    assert code == 0 and doc["data"]["copied"] == {
        "jobs": 0,
        "submit_tokens": 0,
        "job_checkpoints": 0,
        **REPLICA_TABLES,
    }, doc
    assert doc["data"]["present"] == {
        "jobs": 12,
        "submit_tokens": 5,
        "job_checkpoints": 0,
        **REPLICA_TABLES,
    }, doc
    human = cli.run("server", "migrate-store", "-k", kit, "--merge")
    assert human.returncode == 0 and "12 already there" in human.stdout, human.stdout + human.stderr
    assert password not in human.stdout + human.stderr

    held = lock_workspace(workspace)  # as a running server holds it
    try:
        busy = cli.run("server", "migrate-store", "-k", kit, "--merge", "--format", "json")
    finally:
        held.close()
    assert busy.returncode == 4 and "running shoal server" in busy.stdout, busy.stdout
    source.close()


def test_a_bad_target_is_refused_without_its_password(postgres: Any, tmp_path: Path) -> None:
    kit = tmp_path / "server"
    (kit / "workspace").mkdir(parents=True)
    SqliteJobStore(kit / "workspace" / "store.db").close()
    cli = Cli(tmp_path / "home")
    wrong = postgres.url("postgres", password="Secr3t-Wr0ng-pw")
    refused = cli.run("server", "migrate-store", "-k", kit, "--to", wrong, "--format", "json")
    assert refused.returncode == 2 and '"STORE_UNAVAILABLE"' in refused.stdout, refused.stdout
    assert "Secr3t-Wr0ng-pw" not in refused.stdout + refused.stderr
    nothing = cli.run("server", "migrate-store", "-k", kit, "--format", "json")
    assert nothing.returncode == 4 and '"INVALID_ARGS"' in nothing.stdout, nothing.stdout
    mysql = cli.run("server", "migrate-store", "-k", kit, "--to", "mysql://u:pw@h/db", "--format", "json")
    assert mysql.returncode == 4 and '"STORE_CONFIG"' in mysql.stdout, mysql.stdout
