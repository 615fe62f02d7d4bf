"""Where each site's control channel is, told to the shared store (decisions/0047).

With a store other replicas share (PostgreSQL), a site's channel opening and closing on this
replica is written to ``site_sessions`` (``shoal.store.sessions``), so any replica can say
which sites are connected and to which replica (``system status``). A sole server (SQLite)
writes nothing: its own registry is the whole truth. A store that does not answer costs the
site nothing: the channel stays open, the failure is logged, and the table catches up at the
site's next connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shoal.scheduler.sites import ConnectedSite
from shoal.server.context import ServerContext
from shoal.store.sessions import SiteSession

log = logging.getLogger("shoal.server")


def session_of(ctx: ServerContext, site: ConnectedSite) -> SiteSession:
    """The row of ``site``'s channel on this replica (its ``since`` names the channel)."""
    return SiteSession(
        site=site.name,
        replica=ctx.scheduler.replica,
        since=site.connected_at,
        org=site.org,
        version=site.version,
        # only the studies this federation has: all scheduling needs, and what a site's hello
        # lists beyond them would be read by every replica every second
        studies=tuple(sorted(site.studies & set(ctx.studies.names()))) if site.studies is not None else None,
        resources=site.resources,
        jobs=tuple(sorted(site.jobs)),
    )


async def opened(ctx: ServerContext, site: ConnectedSite) -> None:
    """A site said its hello on this replica."""
    if not ctx.scheduler.shared:
        return
    try:
        await asyncio.to_thread(ctx.store.site_opened, session_of(ctx, site))
    except Exception:  # the store is away: the site keeps its channel
        log.exception("site %s: could not record its channel in the shared store", site.name)


async def closed(ctx: ServerContext, site: ConnectedSite) -> None:
    """A greeted site's channel on this replica closed."""
    if not ctx.scheduler.shared:
        return
    try:
        await asyncio.to_thread(ctx.store.site_closed, session_of(ctx, site))
    except Exception:
        log.exception("site %s: could not remove its channel from the shared store", site.name)


def leave_with_its_replica(ctx: ServerContext, site: str, message: dict[str, Any]) -> str | None:
    """Leave ``message`` in ``site_mail`` for the other live replica holding ``site``'s channel;
    that replica, or None when none does. Store calls only: run in a thread."""
    here = ctx.scheduler.replica
    for session in ctx.store.site_sessions():
        if session.site == site and session.replica != here:
            ctx.store.post_site_mail(site, session.replica, message)
            return session.replica
    return None
