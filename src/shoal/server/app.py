"""The server process: builds the app from a server startup kit and serves it over mutual TLS."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import WSCloseCode, web

from shoal import settings
from shoal.api.config_file import shoal_home
from shoal.errors import ShoalError
from shoal.sandbox.confinement import Sandbox
from shoal.scheduler.scheduler import RESUME_WAIT, Scheduler
from shoal.scheduler.sites import SiteRegistry, close_channel
from shoal.security.identity import Identity
from shoal.security.kitfiles import KIT_HINT
from shoal.security.localfiles import (
    byte_count,
    json_object,
    operator_file_error,
    positive_count,
    read_operator_json,
    seconds,
)
from shoal.security.policy import Policy
from shoal.security.revocation import DenyList
from shoal.security.tls import read_kit_json, server_ssl_context
from shoal.server import (
    admin_manage,
    admin_observe,
    admin_routes,
    admin_system,
    metrics,
    site_mail,
    site_routes,
)
from shoal.server.audit import AuditLog
from shoal.server.context import CTX, ServerContext
from shoal.server.gate import ConnectionSettings, GatedSite
from shoal.server.middleware import (
    AUDIT_KEY,
    DENY_KEY,
    audit_middleware,
    errors_middleware,
    identity_middleware,
)
from shoal.server.studies import Studies
from shoal.store.blobs import open_blobs
from shoal.store.choice import open_job_store
from shoal.wire import logconfig
from shoal.wire.models import RESULT_HEADER_MAX
from shoal.workflows.update_checks import UpdateChecks, update_checks_from_limits

SHUTDOWN_GRACE = 2.0  # seconds open requests get to finish when the server stops
FILE_LIMIT_WANTED = 65536  # open files the server asks for (up to the hard limit): one a connection
REVOCATION_CHECK = 1.0  # seconds between looks at revoked.json for connected sites to close
LOCK_FILE = "server.lock"

log = logging.getLogger("shoal.server")

#: What ``local/storage.json`` may say (docs/deployment.md).
STORAGE_KEYS = settings.storage_keys()
#: The byte limits of ``local/limits.json`` (the ServerContext fields of the same names).
BYTE_LIMIT_KEYS = ("max_upload_bytes", "max_store_bytes", "min_free_bytes", "result_floor_bytes")


def server_config(kit_dir: Path) -> dict[str, Any]:
    """The kit's fed_server.json, with the fields the server needs checked (STARTUP_KIT_MISSING
    naming the field): a server for project '' would serve, and mislead, everyone."""
    _, config = read_kit_json(kit_dir)
    where = kit_dir / "startup" / "fed_server.json"
    project = config.get("project")
    if not isinstance(project, str) or not project.strip():
        raise ShoalError("STARTUP_KIT_MISSING", f"{where} names no 'project'", hint=KIT_HINT)
    sites = config.get("sites", [])
    if not isinstance(sites, list) or not all(isinstance(site, str) for site in sites):
        raise ShoalError("STARTUP_KIT_MISSING", f"{where}: 'sites' must be a list of names", hint=KIT_HINT)
    return config


def listen_port(port: object, source: str) -> int:
    """A TCP port 0-65535 (0 picks a free one); INVALID_ARGS naming where it came from."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ShoalError("INVALID_ARGS", f"{source} {port!r} is not a port (0-65535; 0 picks a free one)")
    return port


def raise_file_limit() -> int:
    """Lift the soft limit on open files towards the hard one (the usual soft default, 1024, is
    a few hundred connections away from refusing everyone); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard, FILE_LIMIT_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return soft


def lock_workspace(workspace: Path) -> TextIO:
    """Hold an exclusive lock on the workspace for this process's life (the kernel releases it
    when the process dies, however it dies): a second server on the same store would settle
    the first one's running jobs as ABANDONED while the first kept running them."""
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        handle = (workspace / LOCK_FILE).open("a+", encoding="utf-8")
    except OSError as exc:
        raise ShoalError(
            "LOCAL_FILE_ERROR",
            f"cannot use the workspace {workspace}: {exc.strerror or exc}",
            path=str(workspace),
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ShoalError(
            "LOCAL_FILE_ERROR",
            f"the workspace {workspace} belongs to a running shoal server (pid {holder})",
            path=str(workspace),
            hint=f"Stop that server (pid {holder}) first, or give this one another --workspace.",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@dataclass
class LocalFiles:
    """The operator's files in ``<kit>/local/``, read and checked before anything is written."""

    studies: Studies
    policy: Policy
    limits: dict[str, int]
    update_checks: UpdateChecks
    deny: DenyList
    connections: ConnectionSettings
    storage: dict[str, str]


def _storage(path: Path) -> dict[str, str]:
    """Optional ``local/storage.json``: where the server keeps its state, as
    ``{"store_url": "postgresql://...", "blobs_url": "s3://bucket/prefix"}``; each key may be
    left out (the embedded default), and ``SHOAL_STORE_URL``/``SHOAL_BLOBS_URL`` take precedence.
    The file may hold a password: keep it readable by the server's user only."""
    data = read_operator_json(path)
    if data is None:
        return {}
    data = json_object(data, path)
    unknown = sorted(set(data) - set(STORAGE_KEYS))
    if unknown:
        raise operator_file_error(
            path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(STORAGE_KEYS)}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            # never the value itself: it may be a URL with a password in it
            raise operator_file_error(path, f"'{key}' must be a string (a URL), not {type(value).__name__}")
    return {k: v.strip() for k, v in data.items()}


def read_local_files(kit_dir: Path) -> LocalFiles:
    """LOCAL_FILE_ERROR naming the file and key for a damaged one (a damaged revocation list
    must never be read as "nobody revoked")."""
    local = kit_dir / "local"
    deny = DenyList(local / "revoked.json")
    deny.load()
    return LocalFiles(
        studies=Studies.load(local / "studies.json"),
        policy=Policy.load(local / "authorization.json"),
        limits=_limits(local / "limits.json"),
        update_checks=_update_checks(local / "limits.json"),
        deny=deny,
        connections=_connection_settings(local / "limits.json"),
        storage=_storage(local / "storage.json"),
    )


def build_context(
    kit_dir: Path, workspace: Path, local: LocalFiles, sandbox: Sandbox | None = None
) -> ServerContext:
    config = server_config(kit_dir)
    store_url = settings.text(settings.STORE_URL) or local.storage.get(settings.STORAGE_STORE_URL, "")
    store, store_name = open_job_store(workspace, store_url)
    log.info("job store: %s", store_name)
    # the folder, or the bucket SHOAL_BLOBS_URL (or local/storage.json) names
    blobs_url = settings.text(settings.BLOBS_URL) or local.storage.get(settings.STORAGE_BLOBS_URL, "")
    blobs = open_blobs(workspace, blobs_url)
    sites = SiteRegistry()
    # A store other server processes may share (PostgreSQL) makes this one replica of several
    # (decisions/0041); an embedded SQLite file has one server, the workspace lock's holder.
    shared = bool(store_url)
    replica = settings.text(settings.REPLICA_ID)
    if len(replica) > 64 or not replica.isprintable():
        raise ShoalError("INVALID_ARGS", f"{settings.REPLICA_ID} must be at most 64 printable characters")
    scheduler = Scheduler(
        store,
        blobs,
        workspace / "jobs",
        sites,
        max_running=settings.whole_number(settings.MAX_RUNNING_JOBS) or 1,
        study_sites=local.studies.sites,
        custom_code_allowed=local.studies.allows_custom_code,
        sandbox=sandbox,
        replica=replica,
        shared=shared,
        lease_ttl=settings.seconds(settings.LEASE_TTL),
        lease_renew=settings.seconds(settings.LEASE_RENEW),
    )
    log.info(
        "replica %s (%s)", scheduler.replica, "store shared with other replicas" if shared else "sole server"
    )
    if shared:  # the rows of sites it held when it last stopped go; its heartbeat starts
        store.replica_started(scheduler.replica, scheduler.lease_ttl)
    ctx = ServerContext(
        store=store,
        blobs=blobs,
        scheduler=scheduler,
        sites=sites,
        workspace=workspace,
        project=str(config["project"]),
        provisioned_sites=list(config.get("sites", [])),
        studies=local.studies,
        kit_dir=kit_dir,
        policy=local.policy,
    )
    ctx.cert_not_after = _cert_not_after(kit_dir / "startup" / "server.crt")
    ctx.max_upload_bytes = local.limits.get("max_upload_bytes", ctx.max_upload_bytes)
    ctx.max_store_bytes = local.limits.get("max_store_bytes", ctx.max_store_bytes)
    ctx.min_free_bytes = local.limits.get("min_free_bytes", ctx.min_free_bytes)
    scheduler.update_checks = local.update_checks
    ctx.result_floor_bytes = local.limits.get("result_floor_bytes", ctx.result_floor_bytes)
    return ctx


def _cert_not_after(path: Path) -> float | None:
    """When the server's certificate ends (system status warns before it does)."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None  # the TLS context reports an unusable certificate itself


def _limits(path: Path) -> dict[str, int]:
    """Optional ``local/limits.json``: max_upload_bytes, max_store_bytes, min_free_bytes,
    result_floor_bytes, each a whole number of bytes (LOCAL_FILE_ERROR naming the key otherwise)."""
    data = read_operator_json(path)
    if data is None:
        return {}
    data = json_object(data, path)
    return {k: byte_count(data[k], path, k) for k in BYTE_LIMIT_KEYS if k in data}


def _update_checks(path: Path) -> UpdateChecks:
    """What ``local/limits.json`` says a site's update must pass (shoal.workflows.update_checks)."""
    data = read_operator_json(path)
    return update_checks_from_limits(json_object(data, path) if data is not None else {}, path)


def _connection_settings(path: Path) -> ConnectionSettings:
    """The connection limits of ``local/limits.json`` (``shoal.server.gate``); defaults for the
    keys it does not set."""
    raw = read_operator_json(path)
    data = json_object(raw, path) if raw is not None else {}
    defaults = ConnectionSettings()
    return ConnectionSettings(
        tls_handshake_timeout=seconds(
            data.get("tls_handshake_timeout", defaults.tls_handshake_timeout), path, "tls_handshake_timeout"
        ),
        request_head_timeout=seconds(
            data.get("request_head_timeout", defaults.request_head_timeout), path, "request_head_timeout"
        ),
        max_connections_per_ip=positive_count(
            data.get("max_connections_per_ip", defaults.max_connections_per_ip),
            path,
            "max_connections_per_ip",
        ),
    )


def build_app(ctx: ServerContext, deny: DenyList) -> web.Application:
    app = web.Application(
        middlewares=[metrics.timing_middleware, audit_middleware, errors_middleware, identity_middleware],
        client_max_size=4 * 2**20,
    )
    app[CTX] = ctx
    app[metrics.TIMES_KEY] = metrics.RequestTimes()
    app[DENY_KEY] = deny
    app[AUDIT_KEY] = AuditLog(ctx.workspace / "audit.jsonl")
    app.add_routes(admin_routes.routes())
    app.add_routes(admin_manage.routes())
    app.add_routes(admin_observe.routes())
    app.add_routes(admin_system.routes())
    app.add_routes(site_routes.routes())
    app.add_routes(metrics.routes())
    return app


def close_revoked_sites(ctx: ServerContext, deny: DenyList) -> None:
    """Unlist and close the channel of every connected site the deny list now names: its
    open channel was authenticated before it was revoked, and would otherwise still be
    listed and given jobs. Its reconnect is refused (identity_middleware)."""
    for site in ctx.sites.all():
        reason = deny.reason(Identity(site.name, site.org, "site", None, site.serial))
        if reason is None or not ctx.sites.remove(site.name, site.send):
            continue
        log.warning("closing the channel of site %s: %s", site.name, reason)
        ctx.scheduler.site_disconnected(site.name)
        close_channel(site, 1008, "revoked")  # 1008: policy violation


def close_site_channels(ctx: ServerContext) -> None:
    """The server is stopping: close every site's control channel now (1001, going away). An
    open channel is a request that never ends by itself: left to aiohttp's shutdown, each held
    the stop for SHUTDOWN_GRACE twice over (4 s) before it was cut, and its agent learnt late
    that this server is gone (a replica's sites move to another one sooner)."""
    for site in ctx.sites.all():
        close_channel(site, WSCloseCode.GOING_AWAY, "the server is stopping")


async def watch_revocations(ctx: ServerContext, deny: DenyList) -> None:
    while True:
        try:
            close_revoked_sites(ctx, deny)
        except Exception:  # the watch must outlive any one failure, or revocation stops working
            log.exception("checking connected sites against the revocation list failed")
        await asyncio.sleep(REVOCATION_CHECK)


async def serve(kit_dir: Path, workspace: Path, host: str | None, port: int | None) -> None:
    """Run until SIGTERM/SIGINT; settle jobs a previous run left behind before accepting work."""
    config = server_config(kit_dir)
    # --host, else the kit's listen address (provisioned servers: 0.0.0.0 unless the project
    # file says), else the name it is dialled by (POC kits: 127.0.0.1)
    host = host or str(config.get("listen") or config.get("host", "127.0.0.1"))
    port = (
        listen_port(port, "--port")
        if port is not None
        else listen_port(config.get("port", 0), "the kit's port")
    )
    local = read_local_files(kit_dir)  # refused before the workspace is touched
    # Job code must not reach the kit, the workspace (store, blobs, other jobs) or an admin's
    # ~/.shoal; refused here, before anything is written, where SHOAL_SANDBOX=required cannot be had.
    sandbox = Sandbox([kit_dir, workspace, Path(shoal_home())])
    lock = lock_workspace(workspace)  # before the store is opened, let alone settled
    raise_file_limit()
    ctx = build_context(kit_dir, workspace, local, sandbox)
    log.log(logging.INFO if sandbox.abi >= 1 else logging.WARNING, "%s", sandbox.notice())
    app = build_app(ctx, local.deny)
    settled = ctx.scheduler.settle_after_restart()
    if settled:
        log.warning("settled %d job(s) left running by a previous server process", settled)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        max_field_size=RESULT_HEADER_MAX + 1024,  # X-Shoal-Result carries a result's metrics and meta
        # On SIGTERM, requests still open after this are cut (aiohttp waits 60 s by default):
        # a long poll on a job that is not changing would otherwise hold the shutdown.
        shutdown_timeout=SHUTDOWN_GRACE,
        # The time a connection may hold a server slot without a whole request head: from its
        # handshake, or from the end of its last answer. It never runs while a request is being
        # handled (a long poll, a WebSocket channel, a transfer), see shoal.server.gate.
        keepalive_timeout=local.connections.request_head_timeout,
    )
    await runner.setup()
    site = GatedSite(runner, host, port, ssl_context=server_ssl_context(kit_dir), settings=local.connections)
    try:
        await site.start()
    except OSError as exc:  # the port is taken, or the address is not this machine's
        await runner.cleanup()
        raise ShoalError(
            "LOCAL_FILE_ERROR",
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="Another process may hold that port (a server already running?): stop it, or "
            "start this one with another --port (0 takes a free one).",
        ) from exc
    bound = runner.addresses[0]
    print(json.dumps({"event": "ready", "host": bound[0], "port": bound[1]}), flush=True)
    log.info("shoal server for project %s listening on https://%s:%s", ctx.project, bound[0], bound[1])
    ctx.scheduler.kick()
    ctx.scheduler.launcher.warm_up()
    watcher = asyncio.get_running_loop().create_task(watch_revocations(ctx, app[DENY_KEY]))
    leases = asyncio.get_running_loop().create_task(ctx.scheduler.keep_leases(RESUME_WAIT))
    mail = asyncio.get_running_loop().create_task(site_mail.deliver(ctx)) if ctx.scheduler.shared else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    watcher.cancel()
    leases.cancel()
    if mail is not None:
        mail.cancel()
        await asyncio.gather(mail, return_exceptions=True)
    await ctx.scheduler.shutdown()
    close_site_channels(ctx)
    await runner.cleanup()
    ctx.store.close()
    lock.close()


def run_server(
    kit_dir: Path, workspace: Path | None = None, host: str | None = None, port: int | None = None
) -> int:
    logconfig.setup()
    asyncio.run(serve(kit_dir, workspace or kit_dir / "workspace", host, port))
    return 0
