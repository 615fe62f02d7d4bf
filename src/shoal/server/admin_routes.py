"""The admin API: what the CLI and SDK call. Each handler parses, calls one thing, renders."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal import __version__
from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.server.admin_system import sessions_elsewhere
from shoal.server.context import CTX, ServerContext, small_number
from shoal.server.middleware import identity_of
from shoal.server.results import build_result_zip, parse_parts
from shoal.server.streaming import save_body, stream_job_file
from shoal.server.submission import prepare_submission, store_submission
from shoal.server.views import job_meta, job_row, json_response
from shoal.store.base import JobRecord, Submitter
from shoal.wire import routes as paths
from shoal.wire.rules import SUBMIT_TOKEN_RE

log = logging.getLogger("shoal.server")

LONG_POLL_MAX = 30.0
#: The largest count a query may ask for: SQLite integers are signed 64-bit (a larger one
#: raised OverflowError inside the store).
MAX_COUNT = 2**63 - 1


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def submit_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ident = identity_of(request)
    study = ctx.study_of(request)
    ctx.authorize(request, "submit_job")
    token = request.query.get("submit_token")
    if token is not None and not SUBMIT_TOKEN_RE.fullmatch(token):
        raise ShoalError(
            "INVALID_ARGS", "submit token must be 1-128 of letters, digits, '.', '_', ':' or '-'"
        )
    work = ctx.tmp_dir / uuid.uuid4().hex
    work.mkdir()
    try:
        upload = work / "upload.zip"
        await save_body(request, upload, ctx.max_upload_bytes)
        allowed = ctx.studies.sites(study)
        sites = [s for s in ctx.known_sites() if allowed is None or s in allowed]
        declared = {s.name: s.resources for s in ctx.sites.all()}
        submitter = Submitter(ident.name, ident.org, ident.role or "")
        # One trip to a worker thread for all of it: under load each return to the event loop
        # waits for the CPU, and the temp folder's removal is disk work too.
        record, created = await asyncio.to_thread(
            _accept, ctx, upload, work, sites, declared, study, submitter, token
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, work, True)
        raise
    if created:
        ctx.scheduler.kick()
    return json_response({"job_id": str(record.job_id), "created": created}, status=201 if created else 200)


def _accept(
    ctx: ServerContext,
    upload: Path,
    work: Path,
    sites: list[str],
    declared: dict[str, dict[str, Any]],
    study: str,
    submitter: Submitter,
    token: str | None,
) -> tuple[JobRecord, bool]:
    """Validate, check room, store (in a worker thread); the temp folder goes in every case."""
    try:
        prepared = prepare_submission(upload, work, sites, declared)
        if not ctx.studies.allows_custom_code(study) and prepared.server_custom_code is not None:
            raise ShoalError(
                "CUSTOM_CODE_NOT_ALLOWED", f"study '{study}': {prepared.server_custom_code}", study=study
            )
        ctx.check_room(prepared.archive.stat().st_size, prepared.archive_sha256)
        return store_submission(
            ctx.store, ctx.blobs, prepared, study=study, submitter=submitter, submit_token=token
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count_param(name: str, raw: str) -> int:
    """A query parameter that counts things: ASCII digits, 1 to MAX_COUNT (the length is checked
    before ``int`` so thousands of digits are not even converted)."""
    count = small_number(raw, len(str(MAX_COUNT)))
    if count is None or not 0 < count <= MAX_COUNT:
        raise ShoalError(
            "INVALID_ARGS", f"{name} must be a whole number from 1 to {MAX_COUNT}, not {raw[:40]!r}"
        )
    return count


async def list_jobs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    study = ctx.study_of(request)
    ident = identity_of(request)
    # The jobs the caller may view: all, its own (name and org) or its org's, as the policy says.
    name, org = ctx.policy.listing_scope(ident, "view")
    q = request.query
    token = q.get("submit_token")
    now = time.time()
    if token is not None:  # a token finds only the caller's own job
        job = ctx.store.find_by_submit_token(study, Submitter(ident.name, ident.org, ident.role or ""), token)
        jobs = [job] if job is not None else []
    else:
        raw = q.get("max")
        limit = _count_param("max", raw) if raw is not None else None
        jobs = ctx.store.list_jobs(
            study=study,
            name_prefix=q.get("name") or None,
            id_prefix=q.get("id") or None,
            reverse=q.get("reverse") == "1",
            limit=limit,
            submitter_name=name,
            submitter_org=org,
        )
    return json_response({"jobs": [job_row(j, now, ctx.scheduler.run_of(j.job_id)) for j in jobs]})


def _meta_of(ctx: ServerContext, request: web.Request) -> dict[str, object]:
    job = ctx.job_in_study(request)
    run = ctx.scheduler.run_of(job.job_id)
    return job_meta(job, run, time.time(), None if run is not None else ctx.scheduler.progress_elsewhere(job))


async def get_job(request: web.Request) -> web.Response:
    return json_response(_meta_of(request.app[CTX], request))


async def wait_job(request: web.Request) -> web.Response:
    """Long poll: answer as soon as the job is terminal (pushed by the scheduler) or at the timeout."""
    ctx = request.app[CTX]
    try:
        timeout = min(float(request.query.get("timeout", LONG_POLL_MAX)), LONG_POLL_MAX)
    except ValueError as exc:
        raise ShoalError("INVALID_ARGS", "timeout must be a number") from exc
    deadline = time.monotonic() + max(0.0, timeout)
    job = ctx.job_in_study(request)
    seen = ctx.scheduler.events.version(job.job_id)
    while True:
        job = ctx.job_in_study(request)
        remaining = deadline - time.monotonic()
        if job.status.terminal or remaining <= 0:
            break
        # with replicas, another one may be the job's: its store row is read again this often
        seen = await ctx.scheduler.events.wait_change(
            job.job_id, seen, min(remaining, ctx.scheduler.store_poll)
        )
    run = ctx.scheduler.run_of(job.job_id)
    meta = job_meta(job, run, time.time(), None if run is not None else ctx.scheduler.progress_elsewhere(job))
    return json_response({"terminal": job.status.terminal, "job": meta})


async def download_job(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "download_job")
    if not job.status.terminal:
        raise ShoalError("JOB_NOT_DONE", f"current status: {job.status.value}", job_id=str(job.job_id))
    parts = parse_parts(request.query.get("only"))
    meta = job_meta(job, None, time.time())
    files = ctx.scheduler.job_files
    name = await asyncio.to_thread(build_result_zip, files, ctx.blobs, job, meta, parts)
    return await stream_job_file(request, files, job.job_id, name, "application/zip")


def _visible_running_jobs(ctx: ServerContext, who: Identity) -> list[str]:
    return sorted(str(j) for j, run in ctx.scheduler.runs.items() if ctx.studies.may_use(run.study, who))


#: Certificates that end within this many days are listed under "expiring" in system status.
EXPIRY_WARNING_DAYS = 30


def _certificate(name: str, kind: str, not_after: float | None, now: float) -> dict[str, Any]:
    if not_after is None:
        return {"name": name, "kind": kind, "not_after": None, "days_left": None}
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_after))
    return {"name": name, "kind": kind, "not_after": end, "days_left": int((not_after - now) // 86400)}


def _store_bytes(ctx: ServerContext) -> int:
    """Stored job archives plus the job database (what a server's disk holds of its store).
    A bucket that does not answer leaves its part out: status is how an operator finds out what
    is wrong, so it must not fail with the store (the failure is logged)."""
    try:
        total = ctx.blobs.total_bytes()
    except ShoalError as exc:
        log.warning("system status: the blob store's size is unknown: %s", exc.detail)
        total = 0
    for name in ("store.db", "store.db-wal"):
        try:
            total += (ctx.workspace / name).stat().st_size
        except OSError:
            pass
    return total


async def system_status(request: web.Request) -> web.Response:
    """The server, its sites, and every certificate in use (the server's, the caller's, each
    connected site's), those ending within EXPIRY_WARNING_DAYS also under "expiring". With a
    shared store the sites connected to the other replicas are listed too, each site saying
    which replica holds its channel (its certificate is that replica's to show)."""
    ctx = request.app[CTX]
    now = time.time()
    caller = identity_of(request)
    certificates = [
        _certificate(ctx.kit_dir.name, "server", ctx.cert_not_after, now),
        _certificate(caller.name, caller.kind, caller.not_after, now),
        *(_certificate(s.name, "site", s.cert_not_after, now) for s in ctx.sites.all()),
    ]
    return json_response(
        {
            # Only the running jobs of studies the caller may use: the others are not theirs to see.
            "server": {
                "project": ctx.project,
                "running_jobs": _visible_running_jobs(ctx, identity_of(request)),
                "version": __version__,
                "started_at": ctx.started_at,
                "uptime_s": round(now - ctx.started_at, 1),
                "store_bytes": await asyncio.to_thread(_store_bytes, ctx),
            },
            "sites": [
                *(
                    {
                        "name": s.name,
                        "org": s.org,
                        "connected_at": s.connected_at,
                        "version": s.version,
                        "resources": s.resources,
                        "jobs": sorted(
                            str(j) for j, held in ctx.scheduler.resources.held.items() if s.name in held
                        ),
                        "replica": ctx.scheduler.replica,
                    }
                    for s in ctx.sites.all()
                ),
                # connected to another replica (decisions/0047): what that one wrote of it
                *(
                    {
                        "name": s.site,
                        "org": s.org,
                        "connected_at": s.since,
                        "version": s.version,
                        "resources": {},
                        "jobs": [],
                        "replica": s.replica,
                    }
                    for s in (await sessions_elsewhere(ctx)).values()
                ),
            ],
            "known_sites": ctx.known_sites(),
            "certificates": certificates,
            "expiring": [
                c for c in certificates if c["days_left"] is not None and c["days_left"] < EXPIRY_WARNING_DAYS
            ],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get(paths.HEALTH, health),
        web.post(paths.JOBS, submit_job),
        web.get(paths.JOBS, list_jobs),
        web.get(paths.JOB, get_job),
        web.get(paths.JOB_WAIT, wait_job),
        web.get(paths.JOB_RESULT, download_job),
        web.get(paths.SYSTEM_STATUS, system_status),
    ]
