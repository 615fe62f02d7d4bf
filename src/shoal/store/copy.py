"""Copy an embedded SQLite job store into PostgreSQL (``shoal server migrate-store``).

Both stores share one migration history (decisions/0024), so once each is at the newest
version their tables and columns are the same: every row of every table is copied as it is,
column by column, in one PostgreSQL transaction (all or nothing), oldest row first. The one
column not copied is a table's insertion counter (SQLite's ``INTEGER PRIMARY KEY``, an identity
column in PostgreSQL): the target numbers the rows in the same order, after any it holds.

A target that holds rows is refused (STORE_NOT_EMPTY) unless ``merge``: then a row the target
already has (the same primary or unique key: a job id, a submit token's scope) is left alone,
so running the copy again copies nothing twice. Jobs, their status, reasons, times, errors,
meta and clones, and the submit-token records (deleted jobs' included) all travel.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import ShoalError


@dataclass
class CopyReport:
    """Rows per table: copied, and already in the target (``merge``)."""

    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)


def _tables(db: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    """The store's tables (in creation order) and the columns to copy: all but the rowid alias."""
    names = [
        str(row[0])
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    tables = []
    for name in names:
        info = db.execute(f'PRAGMA table_info("{name}")').fetchall()  # cid, name, type, notnull, default, pk
        rowid_alias = [r[1] for r in info if r[5] == 1 and str(r[2]).upper() == "INTEGER"]
        single_pk = sum(1 for r in info if r[5]) == 1
        columns = [str(r[1]) for r in info if not (single_pk and r[1] in rowid_alias)]
        tables.append((name, columns))
    return tables


def copy_sqlite_to_postgres(source: Path, url: str, *, merge: bool = False) -> CopyReport:
    """Copy the SQLite store at ``source`` into the PostgreSQL database ``url``; see the module.

    Both are brought to the newest schema first (as a server starting on them would). Errors
    never carry the URL's password (shoal.store.choice)."""
    import psycopg

    from shoal.store.choice import POSTGRES_SCHEMES, open_job_store, scrub
    from shoal.store.postgres import PostgresJobStore
    from shoal.store.sqlite import SqliteJobStore

    if url.split(":", 1)[0].lower() not in POSTGRES_SCHEMES:
        raise ShoalError("STORE_CONFIG", "the store to copy into must be a postgresql:// URL")
    if not source.is_file():
        raise ShoalError("LOCAL_FILE_ERROR", f"no job store at {source}", path=str(source))
    SqliteJobStore(source).close()  # migrates it to the newest schema, as the target will be
    target, shown = open_job_store(source.parent, url)
    assert isinstance(target, PostgresJobStore)
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    report = CopyReport()
    try:
        tables = _tables(db)
        with target._write() as conn:
            held = {
                name: int(conn.execute(f'SELECT count(*) FROM "{name}"'.encode()).fetchone()[0])  # type: ignore[index]
                for name, _ in tables
            }
            if any(held.values()) and not merge:
                listed = ", ".join(f"{n} {name}" for name, n in held.items() if n)
                raise ShoalError(
                    "STORE_NOT_EMPTY",
                    f"the job store {shown} already holds rows ({listed}); nothing was copied",
                )
            for name, columns in tables:
                quoted = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join(["%s"] * len(columns))
                insert = f'INSERT INTO "{name}" ({quoted}) VALUES ({marks}) ON CONFLICT DO NOTHING'
                copied = seen = 0
                for row in db.execute(f'SELECT {quoted} FROM "{name}" ORDER BY rowid'):
                    seen += 1
                    copied += conn.execute(insert.encode(), tuple(row)).rowcount
                report.copied[name] = copied
                report.present[name] = seen - copied
    except psycopg.Error as exc:  # the database went away or refused a row: nothing was committed
        detail = scrub(f"{type(exc).__name__}: {exc}".strip(), url)
        raise ShoalError(
            "STORE_UNAVAILABLE", f"copying into {shown} failed, nothing kept: {detail}"
        ) from None
    finally:
        db.close()
        target.close()
    return report
