"""The site API: one WebSocket control channel per site, plus streamed model transfers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from shoal.errors import ShoalError
from shoal.scheduler.runner import JobRun
from shoal.scheduler.sites import ConnectedSite, close_channel
from shoal.server.context import CTX, ServerContext, small_number
from shoal.server.middleware import identity_of
from shoal.server.streaming import save_body, stream_file
from shoal.server.views import json_response
from shoal.wire.channel import CLOSE_REPLACED
from shoal.wire.models import INLINE_BYTES, check_safetensors
from shoal.wire.resources import ResourceError, check_declaration

log = logging.getLogger("shoal.server")

HEARTBEAT_SECONDS = 15.0
MAX_RESULT_BYTES = 8 * 2**30
MAX_LOG_BYTES = 64 * 2**20
LOG_FILES = ("log.txt", "log.json")


async def site_channel(request: web.Request) -> web.WebSocketResponse:
    """Hold the site's control channel: the server pushes deploy/task/end, the site reports back."""
    ctx = request.app[CTX]
    ident = identity_of(request)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=4 * 2**20)
    await ws.prepare(request)

    async def send(message: dict[str, Any]) -> None:
        await ws.send_json(message)

    async def close(code: int, reason: str) -> object:
        return await ws.close(code=code, message=reason.encode())

    site = ConnectedSite(
        name=ident.name,
        org=ident.org,
        send=send,
        serial=ident.serial,
        close=close,
        cert_not_after=ident.not_after,
    )
    try:
        async for msg in ws:
            site.last_contact = time.time()
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                log.warning("site %s sent a message that is not a JSON object; ignored", site.name)
                continue
            kind = data.get("type")
            if kind == "hello":
                site.version = str(data.get("version", ""))
                site.policy = dict(data.get("policy") or {})
                site.resources = _declared_resources(site.name, data.get("resources"))
                reported = {str(j) for j in data.get("jobs", [])}
                waiting, replaced = ctx.sites.add(site)
                if replaced is not None:
                    _close_replaced(replaced)
                ctx.seen_sites.add(site.name)
                log.info("site %s connected", site.name)
                await send({"type": "welcome", "project": ctx.project})
                ctx.scheduler.site_restarted(site.name, reported)
                for message in waiting:  # what the server had to say while the site was away
                    if message.get("job_id") in reported or message.get("type") not in ("task", "log_config"):
                        await send(message)
                for job_id in reported:
                    number = small_number(str(job_id), 16)
                    run = ctx.scheduler.runs.get(number) if number is not None else None
                    if run is None or site.name not in run.site_apps:
                        # A job this server no longer runs (it restarted, or the job ended while
                        # the site was away): the site must not keep its process alive.
                        reason = "the server no longer runs this job"
                        await send({"type": "abort", "job_id": str(job_id), "reason": reason})
                ctx.scheduler.site_connected(site.name)
            elif kind == "result":
                await send(_inline_result(ctx, site.name, data))
            else:
                try:
                    _on_site_message(ctx, site.name, data)
                except (TypeError, ValueError) as exc:  # a malformed report must not cost the channel
                    log.warning("site %s sent a malformed %r message: %s", site.name, kind, exc)
    finally:
        if ctx.sites.remove(site.name, send):
            log.info("site %s disconnected", site.name)
            ctx.scheduler.site_disconnected(site.name)
    return ws


def _close_replaced(old: ConnectedSite) -> None:
    """A second agent with the same site certificate took the registration: close the older
    channel, so no open channel is left unregistered (its agent would sit on it, never
    reconnecting, while the site vanished from the server when the newer one left). Its agent
    sees the close and reconnects, taking the registration back if it is the real one."""
    log.warning("site %s connected again; closing its older connection", old.name)
    close_channel(old, CLOSE_REPLACED, "replaced by a newer connection of this site")


def _run_of(ctx: ServerContext, site: str, job_id: str) -> JobRun | None:
    """The running job ``job_id`` names (as the site sent it), if that site takes part in it."""
    number = small_number(job_id, 16)
    run = ctx.scheduler.runs.get(number) if number is not None else None
    return run if run is not None and site in run.site_apps else None


def _on_site_message(ctx: ServerContext, site: str, data: dict[str, Any]) -> None:
    run = _run_of(ctx, site, str(data.get("job_id", "")))
    if run is None:
        return
    kind = data.get("type")
    if kind == "ready":
        run.site_ready(site)
    elif kind == "log":
        append_site_log(run, site, str(data.get("data", "")))
    elif kind == "metric":
        run.site_metric(site, str(data.get("key")), float(data.get("value", 0.0)), data.get("step"))
    elif kind == "notice":
        run.notice(f"{site}: {data.get('message', '')}")
    elif kind == "failed":
        run.site_failed(site, dict(data.get("error") or {}))
    elif kind == "ended":
        run.site_ended(site)


async def result_received(request: web.Request) -> web.Response:
    """How many bytes of an interrupted result upload arrived (where the site resumes)."""
    _, run, site = _run_for_site(request)
    tmp = run.paths.results / f".{request.match_info['task_id']}-{site}.part"
    return json_response({"received": tmp.stat().st_size if tmp.exists() else 0})


def append_site_log(run: JobRun, site: str, text: str) -> None:
    """A chunk of a site's live log; the full file the site uploads at the end replaces it."""
    dest = run.paths.site_log(site)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and dest.stat().st_size + len(text) > MAX_LOG_BYTES:
        return
    with dest.open("a", encoding="utf-8") as f:
        f.write(text)


def _run_for_site(request: web.Request) -> tuple[ServerContext, JobRun, str]:
    """The running job in the path, if the calling site takes part in it."""
    ctx = request.app[CTX]
    site = identity_of(request).name
    raw = request.match_info["job_id"]
    run = _run_of(ctx, site, raw)
    if run is None:
        raise ShoalError("JOB_NOT_RUNNING", "this site has no part in that job now", job_id=raw)
    return ctx, run, site


async def job_archive(request: web.Request) -> web.StreamResponse:
    ctx, run, _ = _run_for_site(request)
    job = ctx.store.get_job(run.job_id)
    if job is None:
        raise ShoalError("JOB_NOT_FOUND", job_id=str(run.job_id), study="?")
    return await stream_file(request, ctx.blobs.path(job.content_sha256))


async def task_model(request: web.Request) -> web.StreamResponse:
    _, run, site = _run_for_site(request)
    task = run.task_for(site, request.match_info["task_id"])
    if task is None:
        raise ShoalError("JOB_NOT_RUNNING", "no such task for this site", job_id=str(run.job_id))
    run.model_served(site, task.model_path.stat().st_size)
    return await stream_file(request, task.model_path)


async def task_result(request: web.Request) -> web.Response:
    """Stream a site's update to disk, then hand the workflow its path (it aggregates)."""
    _, run, site = _run_for_site(request)
    task_id = request.match_info["task_id"]
    if run.task_for(site, task_id) is None:
        raise ShoalError("JOB_NOT_RUNNING", "no such task for this site", job_id=str(run.job_id))
    try:
        header = result_header(json.loads(request.headers.get("X-Shoal-Result", "{}")))
    except ValueError as exc:
        raise ShoalError("INVALID_ARGS", "X-Shoal-Result is not JSON") from exc
    results = run.paths.results
    results.mkdir(parents=True, exist_ok=True)
    # Uploads resume: the site sends ?offset=N, the bytes it knows arrived; anything else is
    # refused with the size we hold (409), so both sides agree before more bytes are appended.
    tmp = results / f".{task_id}-{site}.part"
    offset = small_number(request.query.get("offset", "0"), 20)
    held = tmp.stat().st_size if tmp.exists() else 0
    if offset is None or (offset != 0 and offset != held):
        return json_response({"error_code": "INVALID_ARGS", "received": held}, status=409)
    await save_body(request, tmp, MAX_RESULT_BYTES, append=offset > 0)
    raw_total = request.headers.get("X-Shoal-Total")
    if raw_total is not None and tmp.stat().st_size != small_number(raw_total, 20):
        return json_response({"error_code": "INVALID_ARGS", "received": tmp.stat().st_size}, status=409)
    try:
        await asyncio.to_thread(check_safetensors, tmp)
    except ShoalError:
        tmp.unlink(missing_ok=True)
        raise
    _take_result(run, site, task_id, tmp, header)
    return json_response({"ok": True})


def result_header(raw: Any) -> dict[str, Any]:
    """What a site says about its result, checked before the workflow sees it: the examples it
    trained on (a whole number, 0 allowed: FedAvg then leaves the update out), metrics that are
    numbers, meta that is an object. INVALID_ARGS otherwise."""
    if not isinstance(raw, dict):
        raise ShoalError("INVALID_ARGS", "the result header is not a JSON object")
    examples = raw.get("num_examples", 1)
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 0:
        raise ShoalError("INVALID_ARGS", f"num_examples must be a whole number >= 0, not {examples!r}")
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
    ):
        raise ShoalError("INVALID_ARGS", "metrics must map names to numbers")
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise ShoalError("INVALID_ARGS", "meta must be a JSON object")
    return {"num_examples": examples, "metrics": metrics, "meta": meta}


def _take_result(run: JobRun, site: str, task_id: str, checked: Path, header: dict[str, Any]) -> None:
    """A complete, checked result: into place, and its path to the workflow."""
    final = run.result_path(task_id, site)
    checked.replace(final)
    run.on_result(site, task_id, final, header)


def _inline_result(ctx: ServerContext, site: str, data: dict[str, Any]) -> dict[str, Any]:
    """A small result sent inside the control channel (INLINE_BYTES). The answer says whether
    it was taken; a site that hears "not taken", or nothing, sends it by PUT instead, which
    reports any error the usual way."""
    task_id = str(data.get("task_id", ""))
    reply = {"type": "result_ack", "job_id": data.get("job_id"), "task_id": task_id, "ok": False}
    run = _run_of(ctx, site, str(data.get("job_id", "")))
    if run is None or run.task_for(site, task_id) is None or not task_id.isalnum():
        return reply
    try:
        body = base64.b64decode(str(data.get("data", "")), validate=True)
    except ValueError:
        return reply
    if len(body) > INLINE_BYTES:
        return reply
    try:
        header = result_header(data.get("header") or {})
    except ShoalError:
        return reply
    results = run.paths.results
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / f".{task_id}-{site}.inline"
    tmp.write_bytes(body)
    try:
        check_safetensors(tmp)
    except ShoalError:
        tmp.unlink(missing_ok=True)
        return reply
    _take_result(run, site, task_id, tmp, header)
    return {**reply, "ok": True}


async def job_log(request: web.Request) -> web.Response:
    _, run, site = _run_for_site(request)
    name = request.query.get("file", "log.txt")
    if name not in LOG_FILES:
        raise ShoalError("INVALID_ARGS", f"log file must be one of {', '.join(LOG_FILES)}")
    dest = run.paths.site_log(site).with_name(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(name + ".part")  # one per file: log.txt and log.json may arrive together
    await save_body(request, tmp, MAX_LOG_BYTES)
    tmp.replace(dest)
    return json_response({"ok": True})


def _declared_resources(site: str, raw: Any) -> dict[str, Any]:
    """A site's declared resources from its hello; one that cannot be read counts as nothing
    declared (no GPUs, no limits), logged, so a hostile hello cannot upset the scheduler."""
    try:
        return check_declaration(raw if raw is not None else {})
    except ResourceError as exc:
        log.warning("site %s declared resources that cannot be used (%s); taken as none", site, exc)
        return {}


async def site_health(request: web.Request) -> web.Response:
    """Who the server takes the caller for: ``shoal preflight`` proves a site kit's identity is
    accepted (the response's Date header also gives it the server's clock)."""
    ident = identity_of(request)
    return json_response({"ok": True, "name": ident.name, "org": ident.org, "kind": ident.kind})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/site/v1/health", site_health),
        web.get("/site/v1/ws", site_channel),
        web.get("/site/v1/jobs/{job_id}/archive", job_archive),
        web.get("/site/v1/jobs/{job_id}/tasks/{task_id}/model", task_model),
        web.put("/site/v1/jobs/{job_id}/tasks/{task_id}/result", task_result),
        web.get("/site/v1/jobs/{job_id}/tasks/{task_id}/result", result_received),
        web.put("/site/v1/jobs/{job_id}/log", job_log),
    ]
