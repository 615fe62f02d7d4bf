"""A running job's checkpoint row, the same SQL for SQLite and PostgreSQL.

The row is what lets a job outlive the server process that ran it (docs/decisions/0040): the
sites it was deployed to, whether its workflow can resume, and after each finished round that
round's number, the workflow's own state (JSON) and the global model's blob id.
``shoal.store.sql.SqlJobStore``, the base of both stores, mixes ``CheckpointRows`` in; only the
parameter mark differs (``?`` for sqlite3, ``%s`` for psycopg). The table is small (one row per
running job), so ``checkpoints`` reads all of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from shoal.store.leases import Lease


@dataclass(frozen=True)
class Checkpoint:
    """One running job's checkpoint. ``last_round`` is None until a round has finished;
    ``state`` is the workflow's JSON (its ``checkpoint_state``), ``model_sha256`` the blob id
    of the global model after ``last_round``; ``restarts`` counts the server restarts the job
    was resumed after."""

    job_id: int
    sites: dict[str, str]
    min_clients: int
    resumable: bool = False
    workflow: str = ""
    last_round: int | None = None
    state: dict[str, Any] | None = None
    model_sha256: str | None = None
    restarts: int = 0


_COLUMNS = "job_id, sites, min_clients, resumable, workflow, last_round, state, model_sha256, restarts"


def _from_row(row: tuple[Any, ...]) -> Checkpoint:
    return Checkpoint(
        job_id=int(row[0]),
        sites=dict(json.loads(row[1])),
        min_clients=int(row[2]),
        resumable=bool(row[3]),
        workflow=str(row[4]),
        last_round=None if row[5] is None else int(row[5]),
        state=None if row[6] is None else dict(json.loads(row[6])),
        model_sha256=row[7],
        restarts=int(row[8]),
    )


class CheckpointRows:
    """The checkpoint half of ``JobStore``, written once for both stores."""

    _MARK = "?"

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _check_fence(self, conn: Any, fence: Lease | None) -> None:
        raise NotImplementedError

    def put_checkpoint(self, checkpoint: Checkpoint, *, fence: Lease | None = None) -> None:
        """Insert or replace the job's row; committed before it returns (``fence``: only while
        that lease holds the job, ``shoal.store.leases``)."""
        m = self._MARK
        values = (
            checkpoint.job_id,
            json.dumps(checkpoint.sites, sort_keys=True),
            checkpoint.min_clients,
            int(checkpoint.resumable),
            checkpoint.workflow,
            checkpoint.last_round,
            None if checkpoint.state is None else json.dumps(checkpoint.state, allow_nan=False),
            checkpoint.model_sha256,
            checkpoint.restarts,
            time.time(),
        )
        with self._write() as conn:
            self._check_fence(conn, fence)
            conn.execute(
                f"INSERT INTO job_checkpoints ({_COLUMNS}, updated) VALUES ({', '.join([m] * 10)}) "
                "ON CONFLICT (job_id) DO UPDATE SET sites = excluded.sites, "
                "min_clients = excluded.min_clients, resumable = excluded.resumable, "
                "workflow = excluded.workflow, last_round = excluded.last_round, "
                "state = excluded.state, model_sha256 = excluded.model_sha256, "
                "restarts = excluded.restarts, updated = excluded.updated",
                values,
            )

    def get_checkpoint(self, job_id: int) -> Checkpoint | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM job_checkpoints WHERE job_id = {self._MARK}", (job_id,))
        return _from_row(rows[0]) if rows else None

    def drop_checkpoint(self, job_id: int, *, fence: Lease | None = None) -> None:
        with self._write() as conn:
            self._check_fence(conn, fence)
            conn.execute(f"DELETE FROM job_checkpoints WHERE job_id = {self._MARK}", (job_id,))

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint row, by job id."""
        return [_from_row(r) for r in self._read(f"SELECT {_COLUMNS} FROM job_checkpoints ORDER BY job_id")]
