"""What both SQL job stores share: the JobStore contract written once, in SQL both speak.

SQLite (``shoal.store.sqlite``) and PostgreSQL (``shoal.store.postgres``) keep the same tables
(one migration history, decisions/0024) and the same contract; they differ in how they connect,
begin a transaction and lock. ``SqlJobStore`` holds every query and the logic around them,
written with ``?`` placeholders (``_sql`` turns them into the driver's), and asks its backend
for what differs:

- ``_write()`` (one transaction holding what the backend's write lock is) and ``_read()``;
- ``_FOR_UPDATE``: the row lock a read-then-write takes (PostgreSQL's ``FOR UPDATE``; nothing in
  SQLite, whose ``BEGIN IMMEDIATE`` already holds the whole database);
- ``_lock_token_scope``: a lock on a submit token's scope before its check-then-insert (an
  advisory lock in PostgreSQL; SQLite's write lock already serialises it);
- ``_INT_MAX``: the largest integer the driver takes (ids past it name no job).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from shoal.errors import ShoalError
from shoal.store.base import JOB_ID_LIMIT, TOKEN_CREATED, TOKEN_JOB_DELETED, JobRecord, Submitter
from shoal.store.checkpoints import CheckpointRows
from shoal.store.leases import Lease, LeaseRows
from shoal.store.mail import MailRows
from shoal.store.sessions import SessionRows
from shoal.wire.status import TERMINAL, JobStatus, can_transition

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
_JOB_COLUMNS = (
    "job_id, study, name, status, status_reason, submitter_name, submitter_org, submitter_role, "
    "submit_time, start_time, end_time, meta, content_sha256, first_error, cloned_from"
)
_TOKEN_WHERE = "study = ? AND submitter_name = ? AND submitter_org = ? AND submitter_role = ? AND token = ?"


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


def record_of(row: tuple[Any, ...]) -> JobRecord:
    """A ``jobs`` row, selected as ``_JOB_COLUMNS``, as the record the contract hands out."""
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


def _raise_if_deleted(row: tuple[Any, ...]) -> None:
    """A submit-token row (job_id, content_hash, state, deleted_time) whose job is gone."""
    if row[2] == TOKEN_JOB_DELETED:
        raise ShoalError(
            "SUBMIT_TOKEN_JOB_DELETED",
            f"job {row[0]} was deleted at {row[3]}",
            data={"job_id": str(row[0]), "state": TOKEN_JOB_DELETED, "deleted_time": row[3]},
        )


class SqlJobStore(LeaseRows, CheckpointRows, SessionRows, MailRows):
    """The JobStore contract over any DB-API-like connection; see the module for the hooks."""

    _MARK = "?"
    _INT_MAX = 2**63 - 1
    _FOR_UPDATE = ""

    # --- what a backend provides ------------------------------------------------------------

    def _write(self) -> AbstractContextManager[Any]:
        """One transaction on the connection it yields: committed at the end, rolled back if it raises."""
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement outside a write transaction, all its rows."""
        raise NotImplementedError

    def _lock_token_scope(self, conn: Any, scope: str) -> None:
        """Serialise check-then-insert of one submit token (``scope`` names it)."""

    def close(self) -> None:
        raise NotImplementedError

    # --- shared plumbing --------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        """``sql`` written with ``?`` placeholders in the driver's own."""
        return sql if self._MARK == "?" else sql.replace("?", self._MARK)

    def _exec(self, conn: Any, sql: str, params: Iterable[Any] = ()) -> Any:
        return conn.execute(self._sql(sql), tuple(params))

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read(self._sql(sql), params)

    def _known_id(self, job_id: int) -> bool:
        """Whether ``job_id`` could name a job at all (the driver would refuse larger numbers)."""
        return 0 < job_id <= self._INT_MAX

    def _get(self, conn: Any, job_id: int) -> JobRecord | None:
        row = self._exec(conn, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return record_of(row) if row else None

    def _token_row(self, conn: Any, study: str, submitter: Submitter, token: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._exec(
            conn,
            f"SELECT job_id, content_hash, state, deleted_time FROM submit_tokens WHERE {_TOKEN_WHERE}"
            + self._FOR_UPDATE,
            (study, submitter.name, submitter.org, submitter.role, token),
        ).fetchone()
        return row

    def _new_job_id(self, conn: Any) -> int:
        """A random id in [1, 2**53) used by no job and no token record (so ids never recur)."""
        while True:
            job_id = secrets.randbelow(JOB_ID_LIMIT - 1) + 1
            taken = self._exec(
                conn,
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
                scope = [study, submitter.name, submitter.org, submitter.role, submit_token]
                self._lock_token_scope(conn, json.dumps(scope))
                row = self._token_row(conn, study, submitter, submit_token)
                if row is not None:
                    _raise_if_deleted(row)
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
                    self._exec(conn, f"DELETE FROM submit_tokens WHERE {_TOKEN_WHERE}", scope)
                else:
                    job_id = self._new_job_id(conn)
            else:
                job_id = self._new_job_id(conn)
            now = time.time()
            self._exec(
                conn,
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
                self._exec(
                    conn,
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
        if not self._known_id(job_id):
            return None
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return record_of(rows[0]) if rows else None

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
            self._MARK,
            self._INT_MAX,
            study=study,
            name_prefix=name_prefix,
            id_prefix=id_prefix,
            limit=limit,
            submitter_name=submitter_name,
            submitter_org=submitter_org,
        )
        records = [record_of(r) for r in self._read(sql, params)]
        if not reverse:
            records.reverse()
        return records

    def find_by_submit_token(self, study: str, submitter: Submitter, token: str) -> JobRecord | None:
        rows = self._query(
            f"SELECT job_id, content_hash, state, deleted_time FROM submit_tokens WHERE {_TOKEN_WHERE}",
            (study, submitter.name, submitter.org, submitter.role, token),
        )
        if not rows:
            return None
        _raise_if_deleted(rows[0])
        return self.get_job(int(rows[0][0]))

    def transition(
        self,
        job_id: int,
        new_status: JobStatus,
        *,
        reason: str = "",
        first_error: dict[str, Any] | None = None,
        fence: Lease | None = None,
    ) -> JobRecord | None:
        new_status = JobStatus(new_status)
        if not self._known_id(job_id):
            return None
        error_text = json.dumps(first_error, sort_keys=True) if first_error is not None else None
        with self._write() as conn:
            self._check_fence(conn, fence)
            row = self._exec(
                conn, "SELECT status FROM jobs WHERE job_id = ?" + self._FOR_UPDATE, (job_id,)
            ).fetchone()
            if row is None or not can_transition(row[0], new_status):
                return None
            now = time.time()
            cur = self._exec(
                conn,
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

    def set_status_reason(
        self, job_id: int, reason: str, *, fence: Lease | None = None, status: JobStatus | None = None
    ) -> None:
        with self._write() as conn:
            self._check_fence(conn, fence)
            if status is None:
                self._exec(conn, "UPDATE jobs SET status_reason = ? WHERE job_id = ?", (reason, job_id))
            else:
                self._exec(
                    conn,
                    "UPDATE jobs SET status_reason = ? WHERE job_id = ? AND status = ?",
                    (reason, job_id, JobStatus(status).value),
                )

    def set_first_error(self, job_id: int, error: dict[str, Any], *, fence: Lease | None = None) -> None:
        with self._write() as conn:
            self._check_fence(conn, fence)
            self._exec(
                conn,
                "UPDATE jobs SET first_error = ? WHERE job_id = ? AND first_error IS NULL",
                (json.dumps(error), job_id),
            )

    def jobs_in_status(self, statuses: Iterable[JobStatus]) -> list[JobRecord]:
        wanted = sorted({JobStatus(s).value for s in statuses})
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY submit_time, seq", wanted
        )
        return [record_of(r) for r in rows]

    def jobs_without_live_lease(self, statuses: Iterable[JobStatus], now: float) -> list[JobRecord]:
        wanted = sorted({JobStatus(s).value for s in statuses})
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        columns = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        rows = self._query(
            f"SELECT {columns} FROM jobs j LEFT JOIN job_leases l ON l.job_id = j.job_id "
            f"WHERE j.status IN ({marks}) AND (l.job_id IS NULL OR l.expires_at < ?) "
            "ORDER BY j.submit_time, j.seq",
            [*wanted, now],
        )
        return [record_of(r) for r in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        rows = self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {JobStatus(status): int(count) for status, count in rows}

    def delete_job(self, job_id: int, *, deleted_by: Submitter | None = None) -> int:
        if not self._known_id(job_id):
            return 0
        by = (
            json.dumps({"name": deleted_by.name, "org": deleted_by.org, "role": deleted_by.role})
            if deleted_by is not None
            else None
        )
        with self._write() as conn:
            if self._FOR_UPDATE:  # token rows first, as create_job locks them: a racing retry waits
                self._exec(conn, "SELECT 1 FROM submit_tokens WHERE job_id = ?" + self._FOR_UPDATE, (job_id,))
            self._exec(conn, "DELETE FROM jobs WHERE job_id = ?", (job_id,))
            cur = self._exec(
                conn,
                "UPDATE submit_tokens SET state = ?, deleted_time = ?, deleted_by = ? "
                "WHERE job_id = ? AND state != ?",
                (TOKEN_JOB_DELETED, _utc_iso(time.time()), by, job_id, TOKEN_JOB_DELETED),
            )
            return int(cur.rowcount)

    def jobs_using_content(self, content_sha256: str) -> int:
        rows = self._query("SELECT COUNT(*) FROM jobs WHERE content_sha256 = ?", (content_sha256,))
        return int(rows[0][0])
