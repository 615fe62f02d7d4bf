"""Admin routes that watch a job: change events (monitor), stats, logs, live log settings."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.scheduler.runner import JobRun
from shoal.server.context import CTX, ServerContext
from shoal.server.views import job_meta, json_response
from shoal.store.base import JobRecord
from shoal.store.jobfiles import JobFiles
from shoal.wire import routes as paths
from shoal.wire.logconfig import LEVELS, MODES

LONG_POLL_MAX = 30.0
LOG_CAP_BYTES = 5 * 2**20  # per log in one answer; the CLI bounds further


async def job_events(request: web.Request) -> web.Response:
    """Long poll for monitor: answer at once if anything changed since ``since``, else on change."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request)
    try:
        since = int(request.query.get("since", "-1"))
        timeout = min(max(0.0, float(request.query.get("timeout", LONG_POLL_MAX))), LONG_POLL_MAX)
    except ValueError as exc:
        raise ShoalError("INVALID_ARGS", "since must be an integer and timeout a number") from exc
    version = ctx.scheduler.events.version(job.job_id)
    if version == since and not job.status.terminal:
        version = await ctx.scheduler.events.wait_change(
            job.job_id, since, min(timeout, ctx.scheduler.store_poll)
        )
        job = ctx.job_in_study(request)
    run = ctx.scheduler.run_of(job.job_id)
    return json_response(
        {
            "version": version,
            "terminal": job.status.terminal,
            "job": job_meta(job, run, time.time(), ctx.scheduler.progress_elsewhere(job)),
        }
    )


def _kept_run(ctx: ServerContext, job: JobRecord, what: str, instead: str) -> JobRun:
    """The live state of a job the server runs, or keeps after it finished (its last
    FINISHED_KEPT jobs since it started), so a finished job shows its final ``what`` as meta
    does: the same numbers, not an error. Otherwise JOB_NOT_RUNNING, whose hint names where the
    same figures are found (``instead``)."""
    run = ctx.scheduler.run_of(job.job_id)
    if run is None:
        kept = "it has not started" if job.start_time is None else f"its {what} are no longer kept"
        raise ShoalError(
            "JOB_NOT_RUNNING",
            f"{kept}; it is {job.status.value} ({instead})",
            job_id=str(job.job_id),
        )
    return run


async def job_stats(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    job = ctx.job_in_study(request)
    instead = f"its metrics: 'shoal job download {job.job_id}'"
    said = _said_elsewhere(ctx, job)
    if said is not None:  # another replica runs it: what it kept with its lease, a second old
        replica, progress = said
        server, per_site = dict(progress.get("server_stats") or {}), dict(progress.get("site_stats") or {})
        sites: list[str] = list(server.get("participating_sites") or [])
    else:
        run = _kept_run(ctx, job, "figures", instead)
        replica, sites = None, run.sites
        server = {**run.progress.as_stats(), "participating_sites": run.sites}
        per_site = run.progress.sites_stats(run.sites)
    site = request.query.get("site", "all")
    if site not in ("all", "server") and site not in sites:
        raise ShoalError("SITE_NOT_FOUND", f"it has no part in job {job.job_id}", site=site)
    data: dict[str, object] = {"job_id": str(job.job_id), "status": job.status.value}
    if replica is not None:
        data["replica"] = replica
    if site in ("all", "server"):
        data["server"] = server
    if site != "server":
        data["sites"] = {s: per_site.get(s, {}) for s in (sites if site == "all" else [site])}
    return json_response(data)


async def job_series(request: web.Request) -> web.Response:
    """The per-round curves of a job the server runs or keeps (``Progress.add_point``): every
    metric of the global model and of each site's logged values, rounds counted from 0 as in
    ``metrics_summary.json``. What the dashboard draws live; a job no longer kept is
    JOB_NOT_RUNNING (its summary holds the same curves: ``job plot``). A job another replica
    runs answers with the curves that replica keeps with its lease (their last rounds)."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request)
    said = _said_elsewhere(ctx, job)
    data: dict[str, object] = {"job_id": str(job.job_id), "status": job.status.value}
    if said is not None and said[1].get("series") is not None:
        data["replica"] = said[0]
        data.update(said[1]["series"])
        return json_response(data)
    run = _kept_run(ctx, job, "curves", f"a finished job's curves: 'shoal job plot {job.job_id}'")
    data.update(run.progress.series())
    return json_response(data)


def _said_elsewhere(ctx: ServerContext, job: JobRecord) -> tuple[str, dict[str, Any]] | None:
    """For a running job another replica holds: that replica and the progress it keeps with its
    lease (``progress_said``), if it says its figures (None otherwise: this replica's own)."""
    if ctx.scheduler.run_of(job.job_id) is not None:
        return None
    said = ctx.scheduler.progress_elsewhere(job)
    return said if said is not None and "server_stats" in said[1] else None


#: The rights a caller may hold on one job (``shoal.security.policy.RIGHTS`` less the
#: federation's ``operate`` and ``submit_job``, which no job decides).
JOB_RIGHTS = ("view", "manage_job", "download_job", "clone_job", "view_logs")


async def job_rights(request: web.Request) -> web.Response:
    """Which of JOB_RIGHTS the caller holds on this job, as the policy decides them for every
    other route: a front end (the dashboard) shows only the actions that would be allowed.
    It decides nothing: each action's own route checks its right again."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request)
    held: dict[str, bool] = {}
    for right in JOB_RIGHTS:
        try:
            ctx.authorize(request, right, job)
            held[right] = True
        except ShoalError as exc:
            if exc.code != "NOT_AUTHORIZED":
                raise
            held[right] = False
    return json_response({"job_id": str(job.job_id), "rights": held})


def _tail(text: bytes) -> tuple[str, bool]:
    if len(text) <= LOG_CAP_BYTES:
        return text.decode("utf-8", "replace"), False
    return text[-LOG_CAP_BYTES:].decode("utf-8", "replace"), True


async def job_logs(request: web.Request) -> web.Response:
    """Stored logs: the server's, and each site's as streamed during the run or uploaded at its
    end; on the server's disk while the job runs, where the blob store keeps files after."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "view_logs")
    files = ctx.scheduler.job_files
    target = request.query.get("site", "server")
    file_name = request.query.get("file", "log.txt")
    if file_name not in ("log.txt", "log.json"):
        raise ShoalError("INVALID_ARGS", "file must be log.txt or log.json")
    run = ctx.scheduler.run_of(job.job_id)
    stored = dict(await asyncio.to_thread(files.list, job.job_id, "workspace/"))
    folders = {name.split("/")[1] for name in stored if name.count("/") >= 2}
    deploy_sites = sorted(run.site_apps) if run else sorted(folders - {"server"})
    if target not in ("server", "all") and target not in deploy_sites:
        # Looked up in the server's own records first: a name is only ever built from a site
        # name the server knows for this job, never from the request's ('../..' names none).
        # Say which sites it has: a typo is then plain to see.
        has = ", ".join(deploy_sites) or "none yet"
        raise ShoalError(
            "LOG_NOT_FOUND", f"that site has no part in this job; its sites: {has}", site=target[:80]
        )
    targets = ["server", *deploy_sites] if target == "all" else [target]
    logs: dict[str, str] = {}
    capped: dict[str, bool] = {}
    unavailable: dict[str, str] = {}
    for name in targets:
        rel = f"workspace/{name}/{file_name}"
        server_text = "workspace/server/log.txt"
        if name == "server" and file_name == "log.json" and server_text in stored:
            text = await asyncio.to_thread(_read_from, files, job.job_id, server_text, 0)
            logs[name], capped[name] = _tail(_records_from_text(text, name))
            continue
        if rel not in stored:
            unavailable[name] = f"no {file_name} stored for this site and job"
            continue
        start = max(0, stored[rel] - LOG_CAP_BYTES - 1)  # one byte more than the cap: _tail says capped
        logs[name], capped[name] = _tail(await asyncio.to_thread(_read_from, files, job.job_id, rel, start))
    if target not in ("server", "all") and target in unavailable:
        kept = [f for f in ("log.txt", "log.json") if f"workspace/{target}/{f}" in stored]
        if not kept and run is not None and not job.status.terminal:
            logs[target], capped[target] = "", False  # a site of the running job, silent so far
            del unavailable[target]
        elif not kept:
            raise ShoalError("LOG_NOT_FOUND", unavailable[target], site=target)
    return json_response(
        {"job_id": str(job.job_id), "logs": logs, "capped": capped, "unavailable": unavailable}
    )


def _read_from(files: JobFiles, job_id: int, name: str, start: int) -> bytes:
    """A job file from byte ``start`` to its end (a log's tail; logs are capped when stored)."""
    with files.open(job_id, name, start) as f:
        return f.read()


def _records_from_text(text: bytes, source: str) -> bytes:
    """The server's log lines ("time - logger - LEVEL - message") as JSON records, one per line;
    continuation lines (tracebacks) join the record before them."""
    out: list[dict[str, str]] = []
    for line in text.decode("utf-8", "replace").splitlines():
        parts = line.split(" - ", 3)
        if len(parts) == 4 and parts[0][:4].isdecimal():
            out.append(
                {
                    "asctime": parts[0],
                    "name": parts[1],
                    "levelname": parts[2],
                    "message": parts[3],
                    "site": source,
                }
            )
        elif out:
            out[-1]["message"] += "\n" + line
        else:
            out.append({"message": line, "site": source})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


async def log_config(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "manage_job")
    try:
        body = await request.json()
    except ValueError as exc:
        raise ShoalError("INVALID_ARGS", "the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise ShoalError("INVALID_ARGS", "the body must be a JSON object")
    setting = str(body.get("setting", ""))
    if setting.upper() not in LEVELS and setting not in MODES:
        raise ShoalError("LOG_CONFIG_INVALID", f"got {setting!r}")
    run = ctx.scheduler.runs.get(job.job_id)
    if run is None:
        raise ShoalError("JOB_NOT_RUNNING", f"it is {job.status.value}", job_id=str(job.job_id))
    site = str(body.get("site", "all"))
    if site not in ("all", "server") and site not in run.site_apps:
        raise ShoalError("SITE_NOT_FOUND", f"it has no part in job {job.job_id}", site=site)
    sites = run.sites if site == "all" else ([] if site == "server" else [site])
    applied = await run.set_log_config(setting, sites, server=site in ("all", "server"))
    return json_response({"job_id": str(job.job_id), "setting": setting, "applied": applied})


def routes() -> list[web.RouteDef]:
    return [
        web.get(paths.JOB_EVENTS, job_events),
        web.get(paths.JOB_STATS, job_stats),
        web.get(paths.JOB_SERIES, job_series),
        web.get(paths.JOB_RIGHTS, job_rights),
        web.get(paths.JOB_LOGS, job_logs),
        web.post(paths.JOB_LOG_CONFIG, log_config),
    ]
