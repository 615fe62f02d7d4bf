"""Operating a federation: the sites the server knows, removing one, restarting or stopping an agent.

Listing needs the ``view`` right; everything that changes the federation needs ``operate``
(project admins by default, ``local/authorization.json``). A site agent obeys these only
because they come from the server over its mutual-TLS channel: nobody else can reach it.
Removing a site names it in ``local/revoked.json``, the file the server already honours
without a restart, so a removed site stays out across restarts until an operator edits it.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.server.context import CTX, ServerContext
from shoal.server.middleware import DENY_KEY, identity_of
from shoal.server.site_mail import send_anywhere
from shoal.server.views import json_response
from shoal.store.sessions import SiteSession
from shoal.wire import routes as paths
from shoal.wire.jobdef import PLAIN_NAME_RE
from shoal.wire.messages import encode
from shoal.wire.site import RestartAgent, ShutdownAgent

SITE_ACTIONS = ("restart", "shutdown")


def _site_name(request: web.Request) -> str:
    name = request.match_info["site"]
    if not PLAIN_NAME_RE.fullmatch(name):
        raise ShoalError("INVALID_ARGS", f"'{name[:64]}' is not a site name")
    return name


async def sessions_elsewhere(ctx: ServerContext) -> dict[str, SiteSession]:
    """The sites connected to another live replica and not to this one, by name, as the shared
    store says (decisions/0047); none with a store no other replica shares."""
    if not ctx.scheduler.shared:
        return {}
    sessions = await asyncio.to_thread(ctx.store.site_sessions)
    here = ctx.scheduler.replica
    return {s.site: s for s in sessions if s.replica != here and ctx.sites.get(s.site) is None}


def site_rows(ctx: ServerContext, elsewhere: dict[str, SiteSession]) -> list[dict[str, Any]]:
    """Every site the server knows (provisioned, seen or connected, here or, from
    ``elsewhere``, to another replica), connected or not; a connected one says its replica."""
    rows = []
    now = time.time()
    for name in sorted({*ctx.known_sites(), *elsewhere}):
        site = ctx.sites.get(name)
        jobs = sorted(str(j) for j, held in ctx.scheduler.resources.held.items() if name in held)
        other = elsewhere.get(name)
        row: dict[str, Any] = {"name": name, "connected": site is not None or other is not None, "jobs": jobs}
        if site is not None:
            row.update(
                org=site.org,
                version=site.version,
                resources=site.resources,
                connected_at=site.connected_at,
                last_contact=site.last_contact,
                idle_s=round(now - site.last_contact, 1),
                replica=ctx.scheduler.replica,
            )
        elif other is not None:  # what the other replica wrote of it; its contact is that one's
            row.update(org=other.org, version=other.version, connected_at=other.since, replica=other.replica)
        rows.append(row)
    return rows


async def list_sites(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.authorize(request, "view")
    return json_response({"sites": site_rows(ctx, await sessions_elsewhere(ctx))})


def _add_revoked_name(path: Path, name: str) -> None:
    """Name ``name`` in the revocation list, keeping everything else in it; atomic."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise ShoalError("LOCAL_FILE_ERROR", f"cannot read {path}: {exc}", path=str(path)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("names", []), list):
        raise ShoalError("LOCAL_FILE_ERROR", f"{path} is not a revocation list", path=str(path))
    names = list(data.get("names", []))
    if name not in names:
        names.append(name)
    data["names"] = names
    fd, tmp = tempfile.mkstemp(prefix=".revoked-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


async def remove_site(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.authorize(request, "operate")
    name = _site_name(request)
    if name not in ctx.known_sites():
        raise ShoalError("SITE_NOT_FOUND", f"no site '{name}' is known to this server", site=name)
    path = ctx.kit_dir / "local" / "revoked.json"
    _add_revoked_name(path, name)
    request.app[DENY_KEY].refresh()  # in force for the next request, and its channel closes within a second
    if name in ctx.provisioned_sites:
        ctx.provisioned_sites.remove(name)
    ctx.seen_sites.discard(name)
    return json_response({"site": name, "removed": True, "revoked_file": str(path)})


#: The message each relayed action is (``remove`` is the server's own).
_SITE_ORDERS: dict[str, type[RestartAgent | ShutdownAgent]] = {
    "restart": RestartAgent,
    "shutdown": ShutdownAgent,
}


async def site_action(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.authorize(request, "operate")
    name, action = _site_name(request), request.match_info["action"]
    if action not in SITE_ACTIONS:
        known = " or ".join(SITE_ACTIONS)
        raise ShoalError("INVALID_ARGS", f"unknown site action '{action[:32]}'; use {known}")
    who = identity_of(request).name
    order = _SITE_ORDERS[action](reason=f"{action} asked by {who}")
    # on this replica's channel, or left for the replica holding the site (decisions/0047)
    replica = await send_anywhere(ctx, name, encode(order))
    if replica is None:
        raise ShoalError("SITE_NOT_FOUND", site=name)
    return json_response({"site": name, "action": action, "sent": True, "replica": replica})


def routes() -> list[web.RouteDef]:
    return [
        web.get(paths.SYSTEM_SITES, list_sites),
        web.post(paths.SITE_REMOVE, remove_site),
        web.post(paths.SITE_ACTION, site_action),
    ]
