"""A replica's heartbeat keeps the sites it holds listed for the others (decisions/0047).

Against a real SQLite store (shared=True makes the scheduler one replica of several): the lease
pass, run once a second in a server, pushes the replica's heartbeat forward; without it the
replica's site sessions stop being listed once its TTL lapses; a replica stopping (``shutdown``)
removes its rows at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shoal.scheduler.scheduler import RESUME_WAIT, Scheduler
from shoal.scheduler.sites import SiteRegistry
from shoal.store.blobs import BlobStore
from shoal.store.sessions import SiteSession
from shoal.store.sqlite import SqliteJobStore


def test_the_lease_pass_keeps_the_replicas_sites_listed_and_shutdown_removes_them(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "store.db")
    scheduler = Scheduler(
        store,
        BlobStore(tmp_path / "blobs"),
        tmp_path / "jobs",
        SiteRegistry(),
        replica="here",
        shared=True,
        lease_ttl=0.3,
    )
    scheduler.kick = lambda: None  # type: ignore[method-assign]  # the heartbeat only
    try:
        store.replica_started("here", 0.3)
        store.site_opened(SiteSession("site-1", "here", time.time(), "acme", "1"))
        assert [s.site for s in store.site_sessions()] == ["site-1"]
        time.sleep(0.4)
        assert store.site_sessions() == []  # no heartbeat: its sites are not listed
        asyncio.run(scheduler.lease_pass(RESUME_WAIT))
        assert [s.replica for s in store.site_sessions()] == ["here"]  # alive again
        asyncio.run(scheduler.shutdown())
        assert store.site_sessions() == []
        store.replica_alive("here", 30.0)
        assert store.site_sessions() == []  # its rows went with its stop, not just hidden
    finally:
        scheduler.close()
        store.close()
