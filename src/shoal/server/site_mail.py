"""Messages for a site whose channel is on another replica (decisions/0047).

``send_anywhere`` sends on the site's channel when it is on this replica; with a shared store
it otherwise leaves the message in ``site_mail`` for the live replica the site's session names
(``shoal.store.mail``). ``deliver`` runs for the server's life: woken by the store's NOTIFY
(PostgreSQL, a listening thread of its own) or, at the latest, by its poll every
``SHOAL_LEASE_RENEW`` seconds, it takes this replica's mail and sends each message on its
site's channel; a message for a site that left this replica meanwhile is passed on to the
replica it is on now, or dropped (logged) when it is on none.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from shoal.server import relay, site_sessions
from shoal.server.context import ServerContext

log = logging.getLogger("shoal.server")


async def send_anywhere(ctx: ServerContext, name: str, message: dict[str, Any]) -> str | None:
    """Send ``message`` to site ``name`` wherever its channel is; the replica that has it (this
    one, or the one it was left for), or None when no live replica holds the site."""
    if ctx.sites.get(name) is not None and await ctx.sites.send(name, message):
        return ctx.scheduler.replica
    if not ctx.scheduler.shared:
        return None
    return await asyncio.to_thread(site_sessions.leave_with_its_replica, ctx, name, message)


async def deliver(ctx: ServerContext) -> None:
    """Run for the server's life (shared store only): take and send this replica's mail."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    stop = threading.Event()
    listen = getattr(ctx.store, "listen_site_mail", None)
    listener = None
    if listen is not None:
        listener = threading.Thread(
            target=listen,
            args=(ctx.scheduler.replica, lambda: loop.call_soon_threadsafe(woken.set), stop),
            name="site-mail-listener",
            daemon=True,
        )
        listener.start()
    try:
        while True:
            try:
                await asyncio.wait_for(woken.wait(), ctx.scheduler.lease_renew)
            except TimeoutError:
                pass
            woken.clear()
            try:
                await _deliver_once(ctx)
            except Exception:  # the store is away: the next wake-up or poll tries again
                log.exception("replica %s: delivering site mail failed", ctx.scheduler.replica)
    finally:  # the listener leaves within half a second, closing its connection
        stop.set()
        if listener is not None:
            await asyncio.to_thread(listener.join, 2.0)


async def _deliver_once(ctx: ServerContext) -> None:
    mail = await asyncio.to_thread(ctx.store.take_site_mail, ctx.scheduler.replica)
    for one in mail:
        if relay.is_relayed(one):  # a job's message for a site here, or a site's for a job here
            try:
                await relay.receive(ctx, one)
            except Exception:  # taken already: one that fails must not cost the others theirs
                log.exception("site %s: a message relayed for it or from it failed", one.site)
            continue
        if ctx.sites.get(one.site) is not None and await ctx.sites.send(one.site, one.message):
            continue
        moved = await asyncio.to_thread(site_sessions.leave_with_its_replica, ctx, one.site, one.message)
        if moved is None:
            log.warning("site %s: a message for it was dropped, no replica holds it", one.site)
