"""Job leases with fencing: which server replica runs a job, the same SQL for SQLite and PostgreSQL.

Several server processes (replicas) may share one PostgreSQL store (decisions/0041). Each job's
controller runs on exactly one of them, the one holding the job's lease: a row with the
replica's id, an epoch and an expiry. The holder renews it every ``SHOAL_LEASE_RENEW`` seconds;
a lease not renewed for ``SHOAL_LEASE_TTL`` seconds may be taken by another replica, which
raises the epoch by one. The database picks the one winner: the take is a conditional update
of the row (or an insert that conflicts), under the row lock PostgreSQL takes for it and the
write lock SQLite holds for every write.

Expiry only decides *when* another replica may take a job over, and it reads the holders'
clocks (keep them in sync, as NTP does). What makes a replica that lost a job harmless is the
fence: every write about the job (``transition``, ``set_status_reason``, ``set_first_error``,
``put_checkpoint``, ``drop_checkpoint``) given a ``fence`` checks, in its own transaction, that
the lease still has that replica and epoch, and raises ``LeaseLost`` otherwise, writing nothing.
A replica paused past its lease (a stopped process, a partition) finds out at its next write
or renewal, whichever comes first, and forgets the job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lease:
    """A replica's hold on a job. ``epoch`` grows by one at each takeover; ``expires_at`` is when
    the lease lapses unless renewed (seconds since the Unix epoch). Used as the ``fence`` of the
    job's writes: they are done only while the lease still has this replica and epoch."""

    job_id: int
    replica: str
    epoch: int
    expires_at: float


class LeaseLost(Exception):
    """A fenced write found the job's lease taken by another replica (or gone): nothing was written."""

    def __init__(self, fence: Lease) -> None:
        super().__init__(
            f"job {fence.job_id}: replica {fence.replica} no longer holds its lease (epoch {fence.epoch})"
        )
        self.fence = fence


class LeaseRows:
    """The lease half of ``JobStore``, written once for both stores (``SqlJobStore`` mixes it in)."""

    _MARK = "?"
    _FOR_UPDATE = ""

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _check_fence(self, conn: Any, fence: Lease | None) -> None:
        """Inside a write transaction: raise ``LeaseLost`` unless ``fence`` still holds its job.
        The row is locked (PostgreSQL) until the transaction ends, so a takeover waits for the
        write, or the write sees the takeover; SQLite's write lock already orders them."""
        if fence is None:
            return
        m = self._MARK
        row = conn.execute(
            f"SELECT 1 FROM job_leases WHERE job_id = {m} AND replica = {m} AND epoch = {m}"
            + self._FOR_UPDATE,
            (fence.job_id, fence.replica, fence.epoch),
        ).fetchone()
        if row is None:
            raise LeaseLost(fence)

    def take_lease(self, job_id: int, replica: str, ttl: float, *, force: bool = False) -> Lease | None:
        """Take the job's lease for ``replica`` if nobody holds it, or its holder let it lapse
        (``force``: whoever holds it, for a server that knows the holder is dead: SQLite's one
        server at its start). The new lease (epoch one more than the last), or None when a live
        lease is someone else's. Committed; of any number of replicas asking at once, one wins."""
        m = self._MARK
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                f"SELECT epoch, expires_at FROM job_leases WHERE job_id = {m}" + self._FOR_UPDATE, (job_id,)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    f"INSERT INTO job_leases (job_id, replica, epoch, expires_at) VALUES ({m}, {m}, 1, {m}) "
                    "ON CONFLICT (job_id) DO NOTHING",
                    (job_id, replica, now + ttl),
                )
                return Lease(job_id, replica, 1, now + ttl) if cur.rowcount == 1 else None
            epoch, expires_at = int(row[0]), float(row[1])
            if expires_at > now and not force:
                return None
            cur = conn.execute(
                f"UPDATE job_leases SET replica = {m}, epoch = {m}, expires_at = {m}, progress = NULL "
                f"WHERE job_id = {m} AND epoch = {m}",
                (replica, epoch + 1, now + ttl, job_id, epoch),
            )
            return Lease(job_id, replica, epoch + 1, now + ttl) if cur.rowcount == 1 else None

    def renew_leases(
        self, leases: Iterable[Lease], ttl: float, progress: Mapping[int, dict[str, Any]] | None = None
    ) -> list[Lease]:
        """Push back the expiry of each lease still held (same replica and epoch); the renewed
        ones. A lease missing from the answer was taken over: its holder must forget the job.
        ``progress``: the holder's view of its jobs (JSON), kept with their leases for the
        replicas that do not run them (``lease_progress``)."""
        m = self._MARK
        now = time.time()
        renewed = []
        told = progress or {}
        with self._write() as conn:
            for lease in leases:
                said = told.get(lease.job_id)
                cur = conn.execute(
                    f"UPDATE job_leases SET expires_at = {m}, progress = COALESCE({m}, progress) "
                    f"WHERE job_id = {m} AND replica = {m} AND epoch = {m}",
                    (
                        now + ttl,
                        None if said is None else json.dumps(said, allow_nan=False),
                        lease.job_id,
                        lease.replica,
                        lease.epoch,
                    ),
                )
                if cur.rowcount == 1:
                    renewed.append(Lease(lease.job_id, lease.replica, lease.epoch, now + ttl))
        return renewed

    def release_lease(self, lease: Lease) -> None:
        """Let the lease lapse now, keeping its epoch (a replica stopping: another takes the job
        over at once). Nothing if it is no longer held."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(
                f"UPDATE job_leases SET expires_at = 0 WHERE job_id = {m} AND replica = {m} AND epoch = {m}",
                (lease.job_id, lease.replica, lease.epoch),
            )

    def end_lease(self, lease: Lease) -> None:
        """Remove the lease of a job that ended (only if still held: a holder that lost the job
        removes nothing)."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM job_leases WHERE job_id = {m} AND replica = {m} AND epoch = {m}",
                (lease.job_id, lease.replica, lease.epoch),
            )

    def lease_of(self, job_id: int) -> Lease | None:
        """The job's lease as stored (held or lapsed), or None."""
        m = self._MARK
        rows = self._read(f"SELECT {_COLUMNS} FROM job_leases WHERE job_id = {m}", (job_id,))
        return _lease(rows[0]) if rows else None

    def lease_progress(self, job_id: int) -> tuple[str, dict[str, Any]] | None:
        """The job's holder and the progress it last wrote with its lease, or None."""
        m = self._MARK
        rows = self._read(f"SELECT replica, progress FROM job_leases WHERE job_id = {m}", (job_id,))
        if not rows or rows[0][1] is None:
            return None
        return str(rows[0][0]), dict(json.loads(rows[0][1]))

    def leases(self) -> list[Lease]:
        """Every lease row, by job id."""
        return [_lease(r) for r in self._read(f"SELECT {_COLUMNS} FROM job_leases ORDER BY job_id")]


_COLUMNS = "job_id, replica, epoch, expires_at"


def _lease(row: tuple[Any, ...]) -> Lease:
    return Lease(int(row[0]), str(row[1]), int(row[2]), float(row[3]))
