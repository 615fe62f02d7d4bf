"""The site API: one WebSocket control channel per site, plus streamed model transfers."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from shoal.errors import ShoalError
from shoal.scheduler.runner import JobRun, TaskState
from shoal.scheduler.sites import ConnectedSite, close_channel
from shoal.server import relay, site_jobs, site_sessions
from shoal.server.context import CTX, ServerContext, small_number
from shoal.server.middleware import identity_of
from shoal.server.site_messages import BadSiteMessage, parse_site_message
from shoal.server.streaming import save_body, stream_blob, stream_file
from shoal.server.views import json_response
from shoal.wire import routes as paths
from shoal.wire.channel import CLOSE_MALFORMED, CLOSE_REPLACED
from shoal.wire.messages import SITE, UnknownKinds, UnknownMessage, encode
from shoal.wire.models import INLINE_BYTES, check_safetensors
from shoal.wire.resources import ResourceError, check_declaration
from shoal.wire.results import ResultInfo
from shoal.wire.rules import job_id_number
from shoal.wire.site import (
    AbortJob,
    Hello,
    InlineResult,
    JobReport,
    ResultAck,
    SiteLogConfig,
    TaskForSite,
    Welcome,
)

log = logging.getLogger("shoal.server")

HEARTBEAT_SECONDS = 15.0


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
    greeted = False
    unknown = UnknownKinds(log, f"site {site.name}")
    try:
        async for msg in ws:
            site.last_contact = time.time()
            if msg.type != WSMsgType.TEXT:
                log.warning(
                    "site %s sent a %s frame on its control channel; ignored", site.name, msg.type.name
                )
                continue
            try:
                message = parse_site_message(msg.data)
            except (BadSiteMessage, UnknownMessage) as exc:
                if not greeted:  # nothing may come before a good hello
                    log.warning("site %s: refused its channel, a malformed first message: %s", site.name, exc)
                    await close(CLOSE_MALFORMED, f"malformed hello: {exc}"[:120])
                    break
                if isinstance(exc, UnknownMessage):
                    unknown(exc.kind)  # once per kind: a newer agent's, or a flood
                else:
                    log.warning("site %s sent a malformed message; ignored: %s", site.name, exc)
                continue
            if isinstance(message, Hello) != (not greeted):
                what = "a second hello" if greeted else f"a {type(message).__name__} before its hello"
                log.warning("site %s: refused its channel, %s", site.name, what)
                await close(CLOSE_MALFORMED, f"protocol violation: {what}")
                break
            try:
                if isinstance(message, Hello):
                    await _greet(ctx, site, message)
                    greeted = True
                elif isinstance(message, InlineResult):  # answered whatever happens: the site waits
                    await site.send(encode(_inline_result(ctx, site.name, message)))
                elif isinstance(message, JobReport):
                    if not site_jobs.on_report(ctx, site.name, message, unknown):
                        relay.pass_report(ctx, site.name, message)  # a job another replica runs
                else:
                    unknown(message.TYPE)  # a message the server sends, not takes
            except ConnectionError:
                raise  # the channel itself broke: the finally below forgets the site
            except Exception:  # one message that cannot be handled must not cost the channel
                log.exception("site %s: handling its %s message failed", site.name, type(message).__name__)
    finally:
        if ctx.sites.remove(site.name, send):
            log.info("site %s disconnected", site.name)
            ctx.scheduler.site_disconnected(site.name)
        if greeted:
            await site_sessions.closed(ctx, site)
    return ws


async def _greet(ctx: ServerContext, site: ConnectedSite, hello: Hello) -> None:
    """Register a site that said a good hello, and settle what it and the server remember."""
    site.version = hello.version
    site.studies = hello.studies
    site.resources = _declared_resources(site.name, hello.resources)
    site.jobs = frozenset(hello.jobs)
    waiting, replaced = ctx.sites.add(site)
    if replaced is not None:
        _close_replaced(replaced)
    ctx.seen_sites.add(site.name)
    log.info("site %s connected", site.name)
    await site_sessions.opened(ctx, site)
    await site.send(encode(Welcome(project=ctx.project)))
    ctx.scheduler.site_restarted(site.name, set(hello.jobs))
    for message in waiting:  # what the server had to say while the site was away
        # a task or a log setting only for a job the site still runs
        if message.get("job_id") in hello.jobs or message.get(SITE.key) not in (
            TaskForSite.TYPE,
            SiteLogConfig.TYPE,
        ):
            await site.send(message)
    for job_id in hello.jobs:
        number = job_id_number(job_id)
        if number is not None and ctx.scheduler.runs_elsewhere(number):
            continue  # another replica runs it, or takes it over: the script is kept for it
        here = site_jobs.run_of(ctx, site.name, job_id) is not None
        if not here and not site_jobs.resuming(ctx, site.name, job_id):
            # A job this server no longer runs (it restarted, or the job ended while the site
            # was away): the site must not keep its process alive.
            reason = "the server no longer runs this job"
            await site.send(encode(AbortJob(job_id=job_id, reason=reason)))
    ctx.scheduler.site_connected(site.name)


def _close_replaced(old: ConnectedSite) -> None:
    """A second agent with the same site certificate took the registration: close the older
    channel, so no open channel is left unregistered (its agent would sit on it, never
    reconnecting, while the site vanished from the server when the newer one left). Its agent
    sees the close and reconnects, taking the registration back if it is the real one."""
    log.warning("site %s connected again; closing its older connection", old.name)
    close_channel(old, CLOSE_REPLACED, "replaced by a newer connection of this site")


async def result_received(request: web.Request) -> web.Response:
    """How many bytes of an interrupted result upload arrived (where the site resumes)."""
    if (relayed := _relayed(request)) is not None:
        return await relay.received(request, *relayed)
    _, run, site = _run_for_site(request)
    tmp = run.partial_path(_open_task(run, site, request.match_info["task_id"]), site)
    return json_response({"received": tmp.stat().st_size if tmp.exists() else 0})


def _open_task(run: JobRun, site: str, raw: str) -> TaskState:
    """The task a site's request names, looked up in the server's records: only the one the
    server sent that site last, unanswered and still open (JobRun.open_task). Paths are then
    built from the record, never from the request (a task id of '../..' names no task)."""
    task = run.open_task(site, raw)
    if task is None:
        raise ShoalError("TASK_NOT_OPEN", task_id=raw[:80], job_id=str(run.job_id))
    return task


def _relayed(request: web.Request) -> tuple[ServerContext, str, str] | None:
    """(context, site, job id) when the path names a job another replica runs and this one
    stands in for toward the calling site (``shoal.server.relay``); None otherwise."""
    ctx = request.app[CTX]
    site = identity_of(request).name
    raw = request.match_info["job_id"]
    if site_jobs.run_of(ctx, site, raw) is not None or relay.entry_of(ctx, site, raw) is None:
        return None
    return ctx, site, raw


def _run_for_site(request: web.Request) -> tuple[ServerContext, JobRun, str]:
    """The running job in the path, if the calling site takes part in it."""
    ctx = request.app[CTX]
    site = identity_of(request).name
    raw = request.match_info["job_id"]
    run = site_jobs.run_of(ctx, site, raw)
    task_id = request.match_info.get("task_id")
    number = job_id_number(raw)
    elsewhere = run is None and number is not None and ctx.scheduler.runs_elsewhere(number)
    if run is None and task_id is not None and (elsewhere or site_jobs.resuming(ctx, site, raw)):
        # a task of the server that died (a model still downloading, a result going up), or of
        # the replica that stopped, before this one takes the job over: closed, as a task of
        # an ended round is, so the site drops it and its job goes on
        raise ShoalError("TASK_NOT_OPEN", task_id=task_id[:80], job_id=raw[:20])
    if run is None:
        raise ShoalError("JOB_NOT_RUNNING", "this site has no part in that job now", job_id=raw)
    return ctx, run, site


async def job_archive(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    site = identity_of(request).name
    raw = request.match_info["job_id"]
    if (relayed := _relayed(request)) is not None:
        return await relay.serve_archive(request, *relayed)
    if site_jobs.resuming(ctx, site, raw):  # deployed by the server that died: the job is the same
        number = small_number(raw, 16)
        job_id = int(number) if number is not None else 0
    else:
        job_id = _run_for_site(request)[1].job_id
    job = ctx.store.get_job(job_id)
    if job is None:
        raise ShoalError("JOB_NOT_FOUND", job_id=str(job_id), study="?")
    return await stream_blob(request, ctx.blobs, job.content_sha256)


async def task_model(request: web.Request) -> web.StreamResponse:
    if (relayed := _relayed(request)) is not None:
        return await relay.serve_model(request, *relayed)
    _, run, site = _run_for_site(request)
    task = run.task_for(site, request.match_info["task_id"])
    closed = ShoalError("TASK_NOT_OPEN", task_id=request.match_info["task_id"][:80], job_id=str(run.job_id))
    if task is None:
        raise closed
    try:
        response = await stream_file(request, task.model_path)
    except FileNotFoundError as exc:  # every site it went to has answered: it is gone
        raise closed from exc
    run.model_served(site, task.model_bytes)
    return response


async def task_result(request: web.Request) -> web.Response:
    """Stream a site's update to disk, then hand the workflow its path (it aggregates).

    Only for the task open for this site (_open_task), and at most result_limit bytes, refused
    as they stream (``site_jobs.receive_result``)."""
    if (relayed := _relayed(request)) is not None:
        return await relay.take_result(request, *relayed, _header_of(request))
    ctx, run, site = _run_for_site(request)
    task = _open_task(run, site, request.match_info["task_id"])
    header = _header_of(request)
    job_id = str(run.job_id)
    answer = await site_jobs.receive_result(
        request,
        run.partial_path(task, site),
        site_jobs.result_limit(ctx, task.model_bytes),
        lambda size: site_jobs.too_large(ctx, job_id, task.task_id, task.model_bytes, size),
        lambda: run.open_task(site, task.task_id) is task,
        lambda: ShoalError("TASK_NOT_OPEN", task_id=task.task_id, job_id=job_id),
    )
    if answer is not None:
        return answer
    site_jobs.take_result(run, site, task, run.partial_path(task, site), header)
    return json_response({"ok": True})


def _header_of(request: web.Request) -> ResultInfo:
    """The result header a site's upload carries (X-Shoal-Result), checked."""
    try:
        return site_jobs.result_header(json.loads(request.headers.get("X-Shoal-Result", "{}")))
    except (ValueError, RecursionError) as exc:
        raise ShoalError("INVALID_ARGS", "X-Shoal-Result is not JSON") from exc


def _inline_result(ctx: ServerContext, site: str, message: InlineResult) -> ResultAck:
    """A small result sent inside the control channel (INLINE_BYTES), checked as an upload is,
    then handed to the workflow as its bytes (or, when the workflow is behind, as a file). The
    answer says whether it was taken; a site that hears "not taken", or nothing, sends it by PUT
    instead, which reports any error the usual way."""
    task_id = message.task_id[:80]
    reply = ResultAck(job_id=message.job_id, task_id=task_id)
    if relay.declines_inline(ctx, site, message.job_id):  # another replica's job: by upload
        return reply
    run = site_jobs.run_of(ctx, site, message.job_id)
    task = run.open_task(site, task_id) if run is not None else None
    if run is None or task is None:
        return replace(reply, error_code="TASK_NOT_OPEN" if run is not None else "JOB_NOT_RUNNING")
    try:
        body = base64.b64decode(message.data, validate=True)
    except ValueError:
        return replace(reply, error_code="INVALID_ARGS")
    if len(body) > site_jobs.result_limit(ctx, task.model_bytes):
        return replace(reply, error_code="RESULT_TOO_LARGE")
    if len(body) > INLINE_BYTES:  # not for the channel: the site sends it by PUT
        return replace(reply, error_code="INVALID_ARGS")
    try:
        header = site_jobs.result_header(message.header)
        check_safetensors(body)
    except ShoalError as exc:
        return replace(reply, error_code=exc.code)
    if run.takes_result_bytes(len(message.data)):  # its bytes to the workflow as they came: no file
        run.on_result_bytes(site, task, message.data, len(body), header)
        return replace(reply, ok=True)
    tmp = run.partial_path(task, site, "inline")  # the workflow is behind: by file, as an upload
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(body)
    site_jobs.take_result(run, site, task, tmp, header)
    return replace(reply, ok=True)


async def job_log(request: web.Request) -> web.Response:
    name = request.query.get("file", "log.txt")
    if name not in site_jobs.LOG_FILES:
        raise ShoalError("INVALID_ARGS", f"log file must be one of {', '.join(site_jobs.LOG_FILES)}")
    if (relayed := _relayed(request)) is not None:
        return await relay.take_log(request, *relayed, name)
    _, run, site = _run_for_site(request)
    dest = run.paths.site_log(site).with_name(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(name + ".part")  # one per file: log.txt and log.json may arrive together
    await save_body(request, tmp, site_jobs.MAX_LOG_BYTES)
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
        web.get(paths.SITE_HEALTH, site_health),
        web.get(paths.SITE_CHANNEL, site_channel),
        web.get(paths.SITE_ARCHIVE, job_archive),
        web.get(paths.SITE_TASK_MODEL, task_model),
        web.put(paths.SITE_TASK_RESULT, task_result),
        web.get(paths.SITE_TASK_RESULT, result_received),
        web.put(paths.SITE_JOB_LOG, job_log),
    ]
