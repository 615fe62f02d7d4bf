"""The default job store: one SQLite file in WAL mode, numbered migrations, one writer.

Why these settings: WAL lets readers proceed while a write commits; ``synchronous=FULL``
makes every commit durable before the call returns (the server answers a submit only after
that), and ``busy_timeout`` makes a second process wait for the write lock instead of
failing. Writes use ``BEGIN IMMEDIATE`` so a check-then-insert (submit tokens) or
compare-and-set (status) holds the database write lock for its whole duration: correct across
processes, not just across threads. One connection behind a lock is enough: the server is one
asyncio process and each statement takes well under a millisecond.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.store.base import (
    JOB_ID_LIMIT,
    TOKEN_CREATED,
    TOKEN_JOB_DELETED,
    JobRecord,
    Submitter,
)
from shoal.wire.status import TERMINAL, JobStatus, can_transition

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
_SQLITE_INT_MAX = 2**63 - 1
_JOB_COLUMNS = (
    "job_id, study, name, status, status_reason, submitter_name, submitter_org, submitter_role, "
    "submit_time, start_time, end_time, meta, content_sha256, first_error, cloned_from"
)


def load_migrations() -> list[tuple[int, str]]:
    """The packaged migrations as ``(version, sql)``, in order; versions must be 1, 2, 3, ..."""
    folder = resources.files("shoal.store").joinpath("migrations")
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"store migrations are not numbered 1..N: {[v for v, _ in found]}")
    return found


def _utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string that starts with ``prefix`` (None: no bound).

    Lets a prefix match use an index as a range ``prefix <= x < bound``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; skip the block
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def listing_query(
    mark: str,
    limit_max: int,
    *,
    study: str | None,
    name_prefix: str | None,
    id_prefix: str | None,
    limit: int | None,
    submitter_name: str | None,
    submitter_org: str | None,
) -> tuple[str, list[Any]]:
    """``list_jobs``' query, newest first, for either store: ``mark`` is the driver's parameter
    placeholder (``?`` for sqlite3, ``%s`` for psycopg), ``limit_max`` its largest integer.
    Prefixes are ranges on indexed columns (``>= prefix`` and ``< its upper bound``)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("study", study),
        ("submitter_name", submitter_name),
        ("submitter_org", submitter_org),
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    for column, prefix in (("name_fold", name_prefix and name_prefix.casefold()), ("id_text", id_prefix)):
        if not prefix:
            continue
        where.append(f"{column} >= {mark}")
        params.append(prefix)
        bound = _prefix_upper_bound(prefix)
        if bound is not None:
            where.append(f"{column} < {mark}")
            params.append(bound)
    sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY submit_time DESC, seq DESC"
    if limit is not None:
        sql += f" LIMIT {mark}"
        params.append(min(max(0, int(limit)), limit_max))  # more than there can be: all
    return sql, params


class SqliteJobStore:
    """``JobStore`` on one SQLite file; see ``shoal.store.base.JobStore`` for the contract."""

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
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    @staticmethod
    def _record(row: tuple[Any, ...]) -> JobRecord:
        return JobRecord(
            job_id=int(row[0]),
            study=row[1],
            name=row[2],
            status=JobStatus(row[3]),
            status_reason=row[4],
            submitter=Submitter(name=row[5], org=row[6], role=row[7]),
            submit_time=float(row[8]),
            start_time=row[9],
            end_time=row[10],
            meta=json.loads(row[11]),
            content_sha256=row[12],
            first_error=json.loads(row[13]) if row[13] is not None else None,
            cloned_from=row[14],
        )

    def _get(self, conn: sqlite3.Connection, job_id: int) -> JobRecord | None:
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._record(row) if row else None

    @staticmethod
    def _token_row(
        conn: sqlite3.Connection, study: str, submitter: Submitter, token: str
    ) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT job_id, content_hash, state, deleted_time FROM submit_tokens "
            "WHERE study = ? AND submitter_name = ? AND submitter_org = ? AND submitter_role = ? "
            "AND token = ?",
            (study, submitter.name, submitter.org, submitter.role, token),
        ).fetchone()
        return row

    @staticmethod
    def _raise_if_deleted(row: tuple[Any, ...]) -> None:
        if row[2] == TOKEN_JOB_DELETED:
            raise ShoalError(
                "SUBMIT_TOKEN_JOB_DELETED",
                f"job {row[0]} was deleted at {row[3]}",
                data={"job_id": str(row[0]), "state": TOKEN_JOB_DELETED, "deleted_time": row[3]},
            )

    @staticmethod
    def _new_job_id(conn: sqlite3.Connection) -> int:
        """A random id in [1, 2**53) used by no job and no token record (so ids never recur)."""
        while True:
            job_id = secrets.randbelow(JOB_ID_LIMIT - 1) + 1
            taken = conn.execute(
                "SELECT 1 FROM jobs WHERE job_id = ? UNION ALL SELECT 1 FROM submit_tokens WHERE job_id = ?",
                (job_id, job_id),
            ).fetchone()
            if not taken:
                return job_id

    # --- JobStore -------------------------------------------------------------------------

    def create_job(
        self,
        *,
        study: str,
        name: str,
        meta: dict[str, Any],
        content_sha256: str,
        submitter: Submitter,
        submit_token: str | None = None,
        content_hash: str | None = None,
        cloned_from: int | None = None,
    ) -> tuple[JobRecord, bool]:
        if submit_token is not None and not content_hash:
            raise ValueError("create_job with a submit_token needs the content_hash")
        clean_meta = {k: v for k, v in meta.items() if k != "submit_token"}
        meta_text = json.dumps(clean_meta, sort_keys=True, allow_nan=False)
        with self._write() as conn:
            if submit_token is not None:
                row = self._token_row(conn, study, submitter, submit_token)
                if row is not None:
                    self._raise_if_deleted(row)
                    if row[1] != content_hash:
                        raise ShoalError(
                            "SUBMIT_TOKEN_CONFLICT",
                            f"token already used for job {row[0]}",
                            data={"existing_job_id": str(row[0])},
                        )
                    existing = self._get(conn, int(row[0]))
                    if existing is not None:
                        return existing, False
                    # Unreachable while job and token are written in one transaction; if a
                    # record ever outlives its job without being marked, reuse its id.
                    job_id = int(row[0])
                    conn.execute(
                        "DELETE FROM submit_tokens WHERE study = ? AND submitter_name = ? AND "
                        "submitter_org = ? AND submitter_role = ? AND token = ?",
                        (study, submitter.name, submitter.org, submitter.role, submit_token),
                    )
                else:
                    job_id = self._new_job_id(conn)
            else:
                job_id = self._new_job_id(conn)
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (job_id, id_text, study, name, name_fold, status, status_reason, "
                "submitter_name, submitter_org, submitter_role, submit_time, meta, content_sha256, "
                "cloned_from) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    str(job_id),
                    study,
                    name,
                    name.casefold(),
                    JobStatus.SUBMITTED.value,
                    submitter.name,
                    submitter.org,
                    submitter.role,
                    now,
                    meta_text,
                    content_sha256,
                    cloned_from,
                ),
            )
            if submit_token is not None:
                conn.execute(
                    "INSERT INTO submit_tokens (study, submitter_name, submitter_org, submitter_role, "
                    "token, job_id, content_hash, state, job_name, submit_time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        study,
                        submitter.name,
                        submitter.org,
                        submitter.role,
                        submit_token,
                        job_id,
                        content_hash,
                        TOKEN_CREATED,
                        name,
                        _utc_iso(now),
                    ),
                )
            record = self._get(conn, job_id)
        assert record is not None
        return record, True

    def get_job(self, job_id: int) -> JobRecord | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return self._record(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        study: str | None,
        name_prefix: str | None = None,
        id_prefix: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
        submitter_name: str | None = None,
        submitter_org: str | None = None,
    ) -> list[JobRecord]:
        sql, params = listing_query(
            "?",
            _SQLITE_INT_MAX,
            study=study,
            name_prefix=name_prefix,
            id_prefix=id_prefix,
            limit=limit,
            submitter_name=submitter_name,
            submitter_org=submitter_org,
        )
        records = [self._record(r) for r in self._read(sql, params)]
        if not reverse:
            records.reverse()
        return records

    def find_by_submit_token(self, study: str, submitter: Submitter, token: str) -> JobRecord | None:
        with self._lock:
            row = self._token_row(self._conn, study, submitter, token)
            if row is None:
                return None
            self._raise_if_deleted(row)
            return self._get(self._conn, int(row[0]))

    def transition(
        self,
        job_id: int,
        new_status: JobStatus,
        *,
        reason: str = "",
        first_error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        new_status = JobStatus(new_status)
        error_text = json.dumps(first_error, sort_keys=True) if first_error is not None else None
        with self._write() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None or not can_transition(row[0], new_status):
                return None
            now = time.time()
            cur = conn.execute(
                "UPDATE jobs SET status = ?, status_reason = ?, "
                "start_time = CASE WHEN ? THEN COALESCE(start_time, ?) ELSE start_time END, "
                "end_time = CASE WHEN ? THEN ? ELSE end_time END, "
                "first_error = COALESCE(first_error, ?) "
                "WHERE job_id = ? AND status = ?",
                (
                    new_status.value,
                    reason,
                    new_status is JobStatus.RUNNING,
                    now,
                    new_status in TERMINAL,
                    now,
                    error_text,
                    job_id,
                    row[0],
                ),
            )
            if cur.rowcount != 1:
                return None
            return self._get(conn, job_id)

    def set_status_reason(self, job_id: int, reason: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET status_reason = ? WHERE job_id = ?", (reason, job_id))

    def set_first_error(self, job_id: int, error: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET first_error = ? WHERE job_id = ? AND first_error IS NULL",
                (json.dumps(error), job_id),
            )

    def jobs_in_status(self, statuses: Iterable[JobStatus]) -> list[JobRecord]:
        wanted = sorted({JobStatus(s).value for s in statuses})
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY submit_time, seq", wanted
        )
        return [self._record(r) for r in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {JobStatus(status): int(count) for status, count in rows}

    def delete_job(self, job_id: int, *, deleted_by: Submitter | None = None) -> int:
        by = (
            json.dumps({"name": deleted_by.name, "org": deleted_by.org, "role": deleted_by.role})
            if deleted_by is not None
            else None
        )
        with self._write() as conn:
            conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            cur = conn.execute(
                "UPDATE submit_tokens SET state = ?, deleted_time = ?, deleted_by = ? "
                "WHERE job_id = ? AND state != ?",
                (TOKEN_JOB_DELETED, _utc_iso(time.time()), by, job_id, TOKEN_JOB_DELETED),
            )
            return int(cur.rowcount)

    def jobs_using_content(self, content_sha256: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM jobs WHERE content_sha256 = ?", (content_sha256,))
        return int(rows[0][0])

    def close(self) -> None:
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
