"""The default job store: one SQLite file in WAL mode, numbered migrations, one writer.

Why these settings: WAL lets readers proceed while a write commits; ``synchronous=FULL``
makes every commit durable before the call returns (the server answers a submit only after
that), and ``busy_timeout`` makes a second process wait for the write lock instead of
failing. Writes use ``BEGIN IMMEDIATE`` so a check-then-insert (submit tokens) or
compare-and-set (status) holds the database write lock for its whole duration: correct across
processes, not just across threads.

Two connections, each behind its own lock: one writes, one reads. A write holds its lock
through the commit's fsync, which on a busy disk takes tens of milliseconds; a reader on the
same connection (``job list`` on the server's event loop) waited for it. WAL lets the read
connection see every committed write without waiting for the one in flight
(decisions/0037).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shoal.store.sql import SqlJobStore, load_migrations


class SqliteJobStore(SqlJobStore):
    """``JobStore`` on one SQLite file; see ``shoal.store.base.JobStore`` for the contract and
    ``shoal.store.sql`` for the queries, shared with PostgreSQL."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing commits implicitly.
        self._conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._lock = threading.RLock()
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not put {self.path} in WAL mode (got {mode})")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        # Opened after the migrations, so it never reads a schema older than the code's. Each
        # statement in autocommit mode is its own read transaction: it sees every write
        # committed before it started, and never waits for one being committed.
        self._reader = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._read_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply every packaged migration newer than ``PRAGMA user_version``, each atomically."""
        migrations = load_migrations()
        with self._write() as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > len(migrations):
                raise RuntimeError(
                    f"{self.path} has schema version {current}; this shoal knows {len(migrations)}. "
                    "Upgrade shoal before opening this store."
                )
            for version, sql in migrations[current:]:
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database write lock; commit or roll back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, so it runs inside our transaction.

    ``executescript`` would commit first and break atomicity; ``sqlite3.complete_statement``
    tells us where each statement ends (it understands quotes and comments, unlike ``split(';')``).
    """
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        raise RuntimeError(f"incomplete SQL statement in migration: {buf[:80]!r}")
    return statements
