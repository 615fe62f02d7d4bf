"""What the PostgreSQL store adds to the shared contract (tests/contract/test_job_store.py runs
that against it): one migration history with SQLite, upgrades that race safely, a connection
that comes back, and a password that never shows in an error."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shoal.errors import ShoalError
from shoal.store.base import JobStore, Submitter
from shoal.store.choice import open_job_store, redact, scrub
from shoal.store.postgres import PostgresJobStore
from shoal.store.sql import load_migrations
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.status import JobStatus

ALICE = Submitter(name="alice@example.com", org="acme", role="lead")


def columns_sqlite(path: Path) -> dict[str, list[tuple[str, bool]]]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    found = {
        t: [(r[1], bool(r[3]) or bool(r[5])) for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables
    }
    conn.close()
    return found


def columns_postgres(url: str) -> dict[str, list[tuple[str, bool]]]:
    found: dict[str, list[tuple[str, bool]]] = {}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name <> 'shoal_schema' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    for table, column, nullable in rows:
        found.setdefault(table, []).append((column, nullable == "NO"))
    return found


def test_one_migration_history_gives_both_the_same_tables(postgres: Any, tmp_path: Path) -> None:
    SqliteJobStore(tmp_path / "jobs.db").close()
    url = postgres.new_schema()
    store = PostgresJobStore(url)
    assert store.schema_version() == len(load_migrations())
    store.close()
    assert columns_postgres(url) == columns_sqlite(tmp_path / "jobs.db")
    with psycopg.connect(url) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'jobs'"
            ).fetchall()
        )
    # 64-bit ids and times: PostgreSQL's INTEGER and REAL are 32-bit, SQLite's are not.
    assert types["job_id"] == types["seq"] == "bigint" and types["submit_time"] == "double precision"


def test_servers_starting_together_migrate_once(postgres: Any) -> None:
    url = postgres.new_schema()
    barrier = threading.Barrier(4)
    opened: list[PostgresJobStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait()
            opened.append(PostgresJobStore(url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 4
    record, _ = opened[0].create_job(study="s", name="n", meta={}, content_sha256="a" * 64, submitter=ALICE)
    assert all(s.get_job(record.job_id) == record for s in opened)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM shoal_schema").fetchone() == (1,)
    for s in opened:
        s.close()


def test_refuses_a_newer_schema(postgres: Any) -> None:
    url = postgres.new_schema()
    PostgresJobStore(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE shoal_schema SET version = 999")
    gc.collect()  # what other tests left to the collector is reported now, not below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(RuntimeError, match="schema version 999"):
            PostgresJobStore(url)
        gc.collect()
    # the refusing store closed its connection (it was left to the garbage collector, open);
    # only a database connection's warning counts: an unrelated leak may still surface here
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert [m for m in leaks if "onnection" in m] == [], leaks


def terminate_sessions(url: str) -> None:
    """End every other session of our user on the database, as a restart or failover would."""
    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() AND usename = current_user"
        ).fetchall()
    assert killed and all(row[0] for row in killed)


def test_a_dropped_connection_is_replaced(postgres: Any) -> None:
    """A database restart or failover ends our session; reads, token look-ups and writes that
    come after it go through on a new session, with nothing lost and no error. A database of its
    own: ending every session of the shared one would end other tests' too."""
    url = postgres.new_database()
    store = PostgresJobStore(url)
    assert isinstance(store, JobStore)
    record, _ = store.create_job(
        study="s",
        name="n",
        meta={},
        content_sha256="a" * 64,
        submitter=ALICE,
        submit_token="t",
        content_hash="h",
    )
    terminate_sessions(url)
    assert store.get_job(record.job_id) == record
    terminate_sessions(url)
    assert store.find_by_submit_token("s", ALICE, "t") == record
    terminate_sessions(url)
    second, created = store.create_job(study="s", name="m", meta={}, content_sha256="a" * 64, submitter=ALICE)
    assert created and [j.job_id for j in store.list_jobs(study="s")] == [record.job_id, second.job_id]
    terminate_sessions(url)
    assert store.transition(second.job_id, JobStatus.ABORTED) is not None
    store.close()


# --- the password stays secret -------------------------------------------------------------


def refused(workspace: Path, url: str) -> ShoalError:
    with pytest.raises(ShoalError) as err:
        open_job_store(workspace, url)
    return err.value


def everything_said(err: ShoalError) -> str:
    """The error as a user, a log or a traceback would show it."""
    return "\n".join([str(err), repr(err.data), *traceback.format_exception(err)])


@pytest.mark.parametrize(
    ("make_url", "code"),
    [
        pytest.param(lambda pg, pw: pg.url(password=pw), "STORE_UNAVAILABLE", id="wrong-password"),
        pytest.param(
            lambda pg, pw: pg.url("no_such_db", password=pg.password), "STORE_UNAVAILABLE", id="unknown-db"
        ),
        pytest.param(
            lambda pg, pw: f"postgresql://shoal:{pw}@127.0.0.1:1/x",
            "STORE_UNAVAILABLE",
            id="nobody-listening",
        ),
        pytest.param(
            lambda pg, pw: f"postgresql://shoal:{pw}@127.0.0.1:notaport/x", "STORE_UNAVAILABLE", id="bad-port"
        ),
        pytest.param(
            lambda pg, pw: f"postgresql://shoal:{pw}@127.0.0.1/x?sslmode=bogus",
            "STORE_UNAVAILABLE",
            id="bad-opt",
        ),
        pytest.param(lambda pg, pw: f"postgresql://shoal:{pw}@[::1/x", "STORE_CONFIG", id="malformed-host"),
        pytest.param(lambda pg, pw: f"mysql://shoal:{pw}@127.0.0.1/x", "STORE_CONFIG", id="not-postgres"),
        pytest.param(lambda pg, pw: f"host=127.0.0.1 password={pw}", "STORE_CONFIG", id="keyword-string"),
    ],
)
def test_a_refused_store_never_shows_the_password(
    postgres: Any, tmp_path: Path, make_url: Any, code: str
) -> None:
    secret = "Sup3r-Secret-pw"
    url = make_url(postgres, secret)
    err = refused(tmp_path, url)
    assert err.code == code
    said = everything_said(err)
    for leaked in (secret, postgres.password):
        assert leaked not in said, said
    assert "***" in said or "not shown" in said, said  # it does name the store, redacted


def test_a_server_password_that_appears_in_text_is_scrubbed() -> None:
    url = "postgresql://me:p%40ss@db.example:5432/shoal"
    assert redact(url) == "postgresql://me:***@db.example:5432/shoal"
    assert scrub(f"bad dsn {url}; p@ss and p%40ss", url) == (
        "bad dsn postgresql://me:***@db.example:5432/shoal; *** and ***"
    )
    assert redact("postgresql://db.example/shoal") == "postgresql://db.example/shoal"


def test_unset_url_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    store, name = open_job_store(tmp_path, None)
    assert isinstance(store, SqliteJobStore) and name == str(tmp_path / "store.db")
    store.close()


def test_the_embedded_default_never_loads_the_driver(tmp_path: Path) -> None:
    """The server on SQLite (and so `make demo`) imports no psycopg: it is an extra."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import shoal.server.app\n"
        "from shoal.store.choice import open_job_store\n"
        "store, _ = open_job_store(Path(sys.argv[1]), '')\n"
        "store.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
