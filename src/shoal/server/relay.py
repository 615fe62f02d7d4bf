"""Tasks and results across replicas: a job runs on one replica, its sites on any (decisions/0048).

The job's replica leaves what it has for a site held by another replica in ``site_mail``
(``ForSite``, ``shoal.scheduler.remote.RelayOut``). The site's replica, taking its mail
(``shoal.server.site_mail``), notes what it passes (``RelayBook``) and sends it on the site's
channel. From then on it stands in for the job's replica toward that site:

- it serves the job's archive and the task's model (a relay blob of the shared blob store);
- it takes the site's result upload as the job's replica would (bounded by the task's model,
  resumable, checked as a safetensors file), keeps it as a relay blob and passes it on
  (``ResultFromSite``); a small result the site offers inline is declined, so it comes by upload;
- it passes on the site's reports about the job (``FromSite``) and its final logs
  (``LogFromSite``).

The job's replica judges what comes back exactly as it judges its own sites' messages
(``shoal.server.site_jobs``): the job must run there with that site among its sites, a result
must answer that site's open task. Passing on is in the order the site said things: one writer
thread posts them (``Scheduler.write_soon``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from aiohttp import web

from shoal.errors import ShoalError
from shoal.scheduler.controller_messages import TASK_ID_RE
from shoal.server import site_jobs, site_sessions
from shoal.server.context import ServerContext
from shoal.server.relay_book import Relayed, RelayedTask
from shoal.server.site_messages import BadSiteMessage, parse_site_message
from shoal.server.streaming import save_body, stream_blob, stream_relay
from shoal.server.views import json_response
from shoal.store import relayblobs
from shoal.store.mail import Mail
from shoal.wire.messages import (
    REPLICA,
    SITE,
    BadMessage,
    Message,
    UnknownKinds,
    UnknownMessage,
    decode,
    encode,
)
from shoal.wire.relay import ForSite, FromSite, LogFromSite, ResultFromSite
from shoal.wire.results import ResultInfo
from shoal.wire.rules import job_id_number
from shoal.wire.site import Ended, JobReport, LogChunk, TaskForSite

log = logging.getLogger("shoal.server")
_unknown = UnknownKinds(log, "another replica")


def is_relayed(mail: Mail) -> bool:
    """Whether a row of ``site_mail`` is one of this module's (else a plain site message)."""
    return REPLICA.key in mail.message


async def receive(ctx: ServerContext, mail: Mail) -> None:
    """One relayed message taken from this replica's mail."""
    try:
        message = decode(REPLICA, mail.message)
    except UnknownMessage as exc:
        _unknown(exc.kind)
        return
    except BadMessage as exc:
        log.warning("a relayed message for site %s was malformed; dropped: %s", mail.site, exc)
        return
    if isinstance(message, ForSite):
        await _to_site(ctx, mail.site, message)
    elif isinstance(message, FromSite):
        _report_here(ctx, mail.site, message)
    elif isinstance(message, ResultFromSite):
        await _result_here(ctx, mail.site, message)
    elif isinstance(message, LogFromSite):
        await _log_here(ctx, mail.site, message)


# --- the site's replica: to the site, and standing in for the job's replica ---------------------


async def _to_site(ctx: ServerContext, site: str, message: ForSite) -> None:
    """Send what the job's replica said on the site's channel; pass it on when the site moved.
    The job and task ids name this replica's files for the site's uploads: ones the job's
    replica could not have sent (it checks them) are dropped."""
    task_id = str(message.message.get("task_id", ""))
    is_task = message.message.get(SITE.key) == TaskForSite.TYPE
    if job_id_number(message.job_id) is None or (is_task and not TASK_ID_RE.fullmatch(task_id)):
        log.warning("site %s: a relayed message with ids no replica sends; dropped", site)
        return
    if ctx.sites.get(site) is not None:
        entry = ctx.relays.passed(site, message.job_id, message.holder)
        if is_task:
            ctx.relays.task_passed(entry, task_id, message.model_blob, message.model_bytes or 0)
        if await ctx.sites.send(site, message.message):
            return
    moved = await asyncio.to_thread(site_sessions.leave_with_its_replica, ctx, site, encode(message))
    if not moved:
        log.warning(
            "site %s: a message of replica %s for it was dropped, no replica holds it", site, message.holder
        )


def entry_of(ctx: ServerContext, site: str, job_id: str) -> Relayed | None:
    """This replica's relay entry for ``site`` in a job another replica runs (None: the job is
    not one this replica passed anything of to that site)."""
    entry = ctx.relays.get(site, job_id)
    return entry if entry is not None and entry.holder != ctx.scheduler.replica else None


def pass_report(ctx: ServerContext, site: str, report: JobReport) -> bool:
    """A site's report about a job run elsewhere goes to its replica; False if there is none."""
    entry = entry_of(ctx, site, report.job_id)
    if entry is None:
        return False
    if isinstance(report, LogChunk):  # what the job's replica would keep of it, at most
        entry.log_bytes += len(report.data)
        if entry.log_bytes > site_jobs.MAX_LOG_BYTES:
            return True
    _post(ctx, site, entry.holder, FromSite(job_id=report.job_id, report=encode(report)))
    if isinstance(report, Ended):
        ctx.relays.forget(site, report.job_id)
    return True


def declines_inline(ctx: ServerContext, site: str, job_id: str) -> bool:
    """An inline result for a job run elsewhere is declined: it comes by upload, passed on as
    a relay blob (a row is no place for a result's bytes)."""
    return entry_of(ctx, site, job_id) is not None


def _post(ctx: ServerContext, site: str, holder: str, message: Message) -> None:
    """Leave ``message`` about ``site`` for ``holder``, after what was posted before it."""
    ctx.scheduler.write_soon(ctx.store.post_site_mail, site, holder, encode(message))


def _entry_or_closed(ctx: ServerContext, site: str, job_id: str) -> Relayed:
    entry = entry_of(ctx, site, job_id)
    if entry is None:
        raise ShoalError("JOB_NOT_RUNNING", "this site has no part in that job now", job_id=job_id[:20])
    return entry


async def serve_archive(
    request: web.Request, ctx: ServerContext, site: str, job_id: str
) -> web.StreamResponse:
    """The job's archive, for a site deployed by another replica."""
    _entry_or_closed(ctx, site, job_id)
    number = job_id_number(job_id)
    job = ctx.store.get_job(number) if number is not None else None
    if job is None:
        raise ShoalError("JOB_NOT_FOUND", job_id=job_id[:20], study="?")
    return await stream_blob(request, ctx.blobs, job.content_sha256)


async def serve_model(request: web.Request, ctx: ServerContext, site: str, job_id: str) -> web.StreamResponse:
    """A task's model, kept as a relay blob by the job's replica until the task closes."""
    task_id = request.match_info["task_id"]
    task = _entry_or_closed(ctx, site, job_id).tasks.get(task_id)
    closed = ShoalError("TASK_NOT_OPEN", task_id=task_id[:80], job_id=job_id[:20])
    if task is None or task.model_blob is None:
        raise closed
    try:
        return await stream_relay(request, ctx.blobs, task.model_blob)
    except FileNotFoundError as exc:  # its task closed: the job's replica dropped the blob
        raise closed from exc


def _partial(ctx: ServerContext, site: str, job_id: str, task_id: str) -> Path:
    """Where a relayed result arrives on this replica (names from the book, never the request)."""
    return ctx.tmp_dir / "relay" / f"{job_id}.{task_id}.{site}.part"


def _open(ctx: ServerContext, site: str, job_id: str, task_id: str) -> tuple[Relayed, RelayedTask]:
    _entry_or_closed(ctx, site, job_id)
    found = ctx.relays.open_task(site, job_id, task_id)
    if found is None:
        raise ShoalError("TASK_NOT_OPEN", task_id=task_id[:80], job_id=job_id[:20])
    return found


async def received(request: web.Request, ctx: ServerContext, site: str, job_id: str) -> web.Response:
    """How many bytes of an interrupted relayed upload arrived."""
    task_id = request.match_info["task_id"]
    _open(ctx, site, job_id, task_id)
    tmp = _partial(ctx, site, job_id, task_id)
    return json_response({"received": tmp.stat().st_size if tmp.exists() else 0})


async def take_result(
    request: web.Request, ctx: ServerContext, site: str, job_id: str, header: ResultInfo
) -> web.Response:
    """A site's result for a task another replica sent: taken as that replica would take it,
    then passed on as a relay blob."""
    task_id = request.match_info["task_id"]
    entry, task = _open(ctx, site, job_id, task_id)
    tmp = _partial(ctx, site, job_id, task_id)
    answer = await site_jobs.receive_result(
        request,
        tmp,
        site_jobs.result_limit(ctx, task.model_bytes),
        lambda size: site_jobs.too_large(ctx, job_id, task_id, task.model_bytes, size),
        lambda: ctx.relays.open_task(site, job_id, task_id) is not None,
        lambda: ShoalError("TASK_NOT_OPEN", task_id=task_id[:80], job_id=job_id[:20]),
    )
    if answer is not None:
        return answer
    try:
        size = tmp.stat().st_size
        blob = await asyncio.to_thread(relayblobs.put, ctx.blobs, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    task.answered = True
    passed = ResultFromSite(job_id=job_id, task_id=task_id, blob=blob, size=size, header=header.header())
    _post(ctx, site, entry.holder, passed)
    return json_response({"ok": True})


async def take_log(
    request: web.Request, ctx: ServerContext, site: str, job_id: str, name: str
) -> web.Response:
    """A site's final log of a job run elsewhere: kept as a relay blob and passed on."""
    entry = _entry_or_closed(ctx, site, job_id)
    tmp = ctx.tmp_dir / "relay" / f"{job_id}.{site}.{name}.part"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        await save_body(request, tmp, site_jobs.MAX_LOG_BYTES)
        blob = await asyncio.to_thread(relayblobs.put, ctx.blobs, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    _post(ctx, site, entry.holder, LogFromSite(job_id=job_id, file=name, blob=blob))
    return json_response({"ok": True})


# --- the job's replica: what a site on another replica said -----------------------------------


def _report_here(ctx: ServerContext, site: str, message: FromSite) -> None:
    try:
        report = parse_site_message(json.dumps(message.report))
    except (BadSiteMessage, UnknownMessage) as exc:
        log.warning("site %s: a report passed on by another replica was refused: %s", site, exc)
        return
    if not isinstance(report, JobReport) or report.job_id != message.job_id:
        log.warning("site %s: a passed-on message that is not a report about its job; dropped", site)
        return
    site_jobs.on_report(ctx, site, report, _unknown)


async def _result_here(ctx: ServerContext, site: str, message: ResultFromSite) -> None:
    """A result a site sent through another replica: judged as an upload here would be."""
    try:
        run = site_jobs.run_of(ctx, site, message.job_id)
        task = run.open_task(site, message.task_id) if run is not None else None
        if run is None or task is None:
            log.info(
                "site %s: a result for task %s came after it closed; dropped", site, message.task_id[:80]
            )
            return
        if message.size > site_jobs.result_limit(ctx, task.model_bytes):
            log.warning("site %s: a passed-on result over its task's bound; dropped", site)
            return
        header = site_jobs.result_header(message.header)
        tmp = run.partial_path(task, site, "relay")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(relayblobs.fetch, ctx.blobs, message.blob, tmp)
        if run.open_task(site, task.task_id) is not task or tmp.stat().st_size != message.size:
            tmp.unlink(missing_ok=True)
            return
        site_jobs.take_result(run, site, task, tmp, header)
    except (ShoalError, OSError) as exc:
        log.warning("site %s: a result passed on by another replica was refused: %s", site, exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(relayblobs.drop, ctx.blobs, message.blob)


async def _log_here(ctx: ServerContext, site: str, message: LogFromSite) -> None:
    try:
        run = site_jobs.run_of(ctx, site, message.job_id)
        if run is None or message.file not in site_jobs.LOG_FILES:
            return
        dest = run.paths.site_log(site).with_name(message.file)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(message.file + ".relay")
        await asyncio.to_thread(relayblobs.fetch, ctx.blobs, message.blob, tmp)
        tmp.replace(dest)
    except (ShoalError, OSError) as exc:
        log.warning("site %s: its log passed on by another replica could not be kept: %s", site, exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(relayblobs.drop, ctx.blobs, message.blob)
