"""The server process: builds the app from a server startup kit and serves it over mutual TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from aiohttp import web

from shoal.fl import logconfig
from shoal.scheduler.scheduler import Scheduler
from shoal.scheduler.sites import SiteRegistry
from shoal.security.policy import Policy
from shoal.security.revocation import DenyList
from shoal.security.tls import read_kit_json, server_ssl_context
from shoal.server import admin_manage, admin_observe, admin_routes, site_routes
from shoal.server.audit import AuditLog
from shoal.server.context import CTX, ServerContext
from shoal.server.middleware import (
    AUDIT_KEY,
    DENY_KEY,
    audit_middleware,
    errors_middleware,
    identity_middleware,
)
from shoal.server.studies import Studies
from shoal.store.blobs import BlobStore
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.models import RESULT_HEADER_MAX

SHUTDOWN_GRACE = 2.0  # seconds open requests get to finish when the server stops

log = logging.getLogger("shoal.server")


def build_context(kit_dir: Path, workspace: Path) -> ServerContext:
    _, config = read_kit_json(kit_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    store = SqliteJobStore(workspace / "store.db")
    blobs = BlobStore(workspace / "blobs")
    sites = SiteRegistry()
    studies = Studies.load(kit_dir / "local" / "studies.json")
    scheduler = Scheduler(store, blobs, workspace / "jobs", sites, study_sites=studies.sites)
    ctx = ServerContext(
        store=store,
        blobs=blobs,
        scheduler=scheduler,
        sites=sites,
        workspace=workspace,
        project=str(config.get("project", "")),
        provisioned_sites=list(config.get("sites", [])),
        studies=studies,
        kit_dir=kit_dir,
        policy=Policy.load(kit_dir / "local" / "authorization.json"),
    )
    limits = _limits(kit_dir / "local" / "limits.json")
    ctx.max_upload_bytes = limits.get("max_upload_bytes", ctx.max_upload_bytes)
    ctx.max_store_bytes = limits.get("max_store_bytes", ctx.max_store_bytes)
    ctx.min_free_bytes = limits.get("min_free_bytes", ctx.min_free_bytes)
    return ctx


def _limits(path: Path) -> dict[str, int]:
    """Optional ``local/limits.json``: max_upload_bytes, max_store_bytes, min_free_bytes."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    keys = ("max_upload_bytes", "max_store_bytes", "min_free_bytes")
    return {k: int(data[k]) for k in keys if k in data}


def build_app(ctx: ServerContext) -> web.Application:
    app = web.Application(
        middlewares=[audit_middleware, errors_middleware, identity_middleware], client_max_size=4 * 2**20
    )
    app[CTX] = ctx
    app[DENY_KEY] = DenyList(ctx.kit_dir / "local" / "revoked.json")
    app[AUDIT_KEY] = AuditLog(ctx.workspace / "audit.jsonl")
    app.add_routes(admin_routes.routes())
    app.add_routes(admin_manage.routes())
    app.add_routes(admin_observe.routes())
    app.add_routes(site_routes.routes())
    return app


async def serve(kit_dir: Path, workspace: Path, host: str | None, port: int | None) -> None:
    """Run until SIGTERM/SIGINT; settle jobs a previous run left behind before accepting work."""
    _, config = read_kit_json(kit_dir)
    host = host or str(config.get("host", "127.0.0.1"))
    port = int(port if port is not None else config.get("port", 0))
    ctx = build_context(kit_dir, workspace)
    settled = ctx.scheduler.settle_after_restart()
    if settled:
        log.warning("settled %d job(s) left running by a previous server process", settled)
    runner = web.AppRunner(
        build_app(ctx),
        access_log=None,
        handle_signals=False,
        max_field_size=RESULT_HEADER_MAX + 1024,  # X-Shoal-Result carries a result's metrics and meta
        # On SIGTERM, requests still open after this are cut (aiohttp waits 60 s by default):
        # a long poll on a job that is not changing would otherwise hold the shutdown.
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(kit_dir), reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    print(json.dumps({"event": "ready", "host": bound[0], "port": bound[1]}), flush=True)
    log.info("shoal server for project %s listening on https://%s:%s", ctx.project, bound[0], bound[1])
    ctx.scheduler.kick()
    ctx.scheduler.launcher.warm_up()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await ctx.scheduler.shutdown()
    await runner.cleanup()
    ctx.store.close()


def run_server(
    kit_dir: Path, workspace: Path | None = None, host: str | None = None, port: int | None = None
) -> int:
    logconfig.setup()
    asyncio.run(serve(kit_dir, workspace or kit_dir / "workspace", host, port))
    return 0
