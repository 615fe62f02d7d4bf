"""Which replica holds each site's control channel, and which replicas are alive (decisions/0047).

With several server replicas sharing one PostgreSQL store (decisions/0041), a site's channel
ends on whichever replica the load balancer chose. Any replica must be able to say where every
site is: an admin asking one replica about a site connected to another, and later the delivery
of a task to a site held by another replica. So each replica writes a ``site_sessions`` row when
a site's channel opens (site, replica, since; the site's organisation and version for the sites
list) and removes it when the channel closes, only if the row is still that channel's: a site
that reconnected (to another replica, or to the same one) before the old channel's close was
written keeps the newer row.

A replica that dies closes nothing. Its rows are recognised by its heartbeat: a ``replicas``
row it pushes forward with each lease renewal (``SHOAL_LEASE_RENEW``, for ``SHOAL_LEASE_TTL``
seconds, the same liveness its job leases have; a replica without jobs has no lease, hence a
row of its own). Sessions whose replica's heartbeat lapsed are not listed; a replica that
starts (under the same ``SHOAL_REPLICA_ID``) removes whatever rows it left, and a replica gone
for ``FORGET_AFTER`` seconds has its rows removed by any other's heartbeat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

#: Seconds after a replica's heartbeat lapsed that the others remove its rows (it is long dead:
#: a replica paused that long finds its sites gone anyway, their agents having reconnected).
FORGET_AFTER = 3600.0


@dataclass(frozen=True)
class SiteSession:
    """A site's control channel as the shared store knows it: on which replica, since when
    (seconds since the Unix epoch), the organisation and agent version it said, and what the
    replica running a job needs to schedule it from afar (decisions/0048): the studies its
    policy serves (None: every one), its declared resources (checked by its replica) and the
    jobs its agent said it ran when this channel opened."""

    site: str
    replica: str
    since: float
    org: str
    version: str
    studies: tuple[str, ...] | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    jobs: tuple[str, ...] = ()

    def said(self) -> str:
        """The hello's facts as the row's ``said`` column keeps them."""
        studies = sorted(self.studies) if self.studies is not None else None
        return json.dumps({"studies": studies, "resources": self.resources, "jobs": list(self.jobs)})


def _session(row: tuple[Any, ...]) -> SiteSession:
    """A row read back; a ``said`` that cannot be read counts as nothing said."""
    try:
        said = json.loads(row[5]) if row[5] else {}
    except ValueError:
        said = {}
    said = said if isinstance(said, dict) else {}
    studies = said.get("studies")
    resources = said.get("resources")
    jobs = said.get("jobs")
    return SiteSession(
        str(row[0]),
        str(row[1]),
        float(row[2]),
        str(row[3]),
        str(row[4]),
        studies=tuple(str(s) for s in studies) if isinstance(studies, list) else None,
        resources=resources if isinstance(resources, dict) else {},
        jobs=tuple(str(j) for j in jobs) if isinstance(jobs, list) else (),
    )


class SessionRows:
    """The site-session half of ``JobStore``, written once for both stores (mixed in)."""

    _MARK = "?"

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def replica_started(self, replica: str, ttl: float) -> None:
        """A replica starts: the session rows it left when it last stopped or died go (none of
        those channels is open now), and its heartbeat says it is alive for ``ttl`` seconds."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(f"DELETE FROM site_sessions WHERE replica = {m}", (replica,))
            self._beat(conn, replica, time.time() + ttl)

    def replica_alive(self, replica: str, ttl: float) -> None:
        """The replica's heartbeat: alive for ``ttl`` more seconds. Also removes the rows of
        replicas whose heartbeat lapsed more than ``FORGET_AFTER`` seconds ago."""
        m = self._MARK
        now = time.time()
        with self._write() as conn:
            self._beat(conn, replica, now + ttl)
            gone = now - FORGET_AFTER
            conn.execute(
                f"DELETE FROM site_sessions WHERE replica IN "
                f"(SELECT replica FROM replicas WHERE alive_until < {m})",
                (gone,),
            )
            conn.execute(f"DELETE FROM replicas WHERE alive_until < {m}", (gone,))

    def replica_stopped(self, replica: str) -> None:
        """A replica stops on purpose: its sessions and its heartbeat go at once."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(f"DELETE FROM site_sessions WHERE replica = {m}", (replica,))
            conn.execute(f"DELETE FROM replicas WHERE replica = {m}", (replica,))

    def _beat(self, conn: Any, replica: str, until: float) -> None:
        m = self._MARK
        conn.execute(
            f"INSERT INTO replicas (replica, alive_until) VALUES ({m}, {m}) "
            "ON CONFLICT (replica) DO UPDATE SET alive_until = excluded.alive_until",
            (replica, until),
        )

    def site_opened(self, session: SiteSession) -> None:
        """A site's channel opened on ``session.replica``: its row says so (replacing the row
        of an older channel, on this replica or another)."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(
                "INSERT INTO site_sessions (site, replica, since, org, version, said) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (site) DO UPDATE SET replica = excluded.replica, since = excluded.since, "
                "org = excluded.org, version = excluded.version, said = excluded.said",
                (session.site, session.replica, session.since, session.org, session.version, session.said()),
            )

    def site_closed(self, session: SiteSession) -> None:
        """A site's channel closed: its row goes if it is still that channel's (same replica,
        same ``since``): the site may already have a newer channel, on another replica or on
        this one, whose row must stay."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM site_sessions WHERE site = {m} AND replica = {m} AND since = {m}",
                (session.site, session.replica, session.since),
            )

    def site_sessions(self) -> list[SiteSession]:
        """The sessions of live replicas (heartbeat not lapsed), by site name."""
        m = self._MARK
        rows = self._read(
            "SELECT s.site, s.replica, s.since, s.org, s.version, s.said FROM site_sessions s "
            f"JOIN replicas r ON r.replica = s.replica WHERE r.alive_until >= {m} ORDER BY s.site",
            (time.time(),),
        )
        return [_session(r) for r in rows]
