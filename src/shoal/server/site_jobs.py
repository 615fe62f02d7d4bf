"""A site's part in a job this replica runs: its reports, its results, its logs.

What a site says about a job, on its channel or by upload, is judged here the same way whether
the site's channel is on this replica (``shoal.server.site_routes``) or on another one that
passed it on through the shared store (``shoal.server.relay``, decisions/0048): the job must be
running here with that site among its sites, a result must answer the task open for that site
and fit its bound, a log must be one of the site's two log files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.scheduler.runner import JobRun, TaskState
from shoal.server.context import ServerContext, small_number
from shoal.server.gate import bulk_reads
from shoal.server.streaming import save_body
from shoal.server.views import json_response
from shoal.wire.messages import BadMessage, UnknownKinds
from shoal.wire.models import RESULT_SIZE_FACTOR, check_safetensors, result_bound
from shoal.wire.results import ResultInfo, checked_result_info
from shoal.wire.rules import job_id_number
from shoal.wire.site import Ended, JobFailed, JobReport, LogChunk, LoggedMetric, Ready, SiteNotice

MAX_LOG_BYTES = 64 * 2**20
LOG_FILES = ("log.txt", "log.json")


def run_of(ctx: ServerContext, site: str, job_id: str) -> JobRun | None:
    """The running job ``job_id`` names (as the site sent it), if that site takes part in it."""
    number = job_id_number(job_id)
    run = ctx.scheduler.runs.get(number) if number is not None else None
    return run if run is not None and site in run.site_apps else None


def resuming(ctx: ServerContext, site: str, job_id: str) -> bool:
    """Whether ``job_id`` (as the site sent it) waits to resume after a server restart with
    this site among its sites: its script is kept for the resumed run (decisions/0040)."""
    number = small_number(job_id, 16)
    row = ctx.scheduler.resuming.get(number) if number is not None else None
    return row is not None and site in row.sites


def on_report(ctx: ServerContext, site: str, message: JobReport, unknown: UnknownKinds) -> bool:
    """A checked report about a job; False (nothing done) when the job does not run here with
    that site among its sites."""
    run = run_of(ctx, site, message.job_id)
    if run is None:
        return False
    handle = _REPORTS.get(type(message))
    if handle is None:
        unknown(message.TYPE)
        return True
    handle(run, site, message)
    return True


def _failed(run: JobRun, site: str, message: JobFailed) -> None:
    run.site_failed(site, {"type": message.error.type, "message": message.error.message})


def _metric(run: JobRun, site: str, message: LoggedMetric) -> None:
    run.site_metric(site, message.key, message.value, message.step)


def _log_chunk(run: JobRun, site: str, message: LogChunk) -> None:
    append_site_log(run, site, message.data, message.file)


#: What the server does with each report a site makes about a job it takes part in.
_REPORTS: dict[type[JobReport], Callable[[JobRun, str, Any], None]] = {
    Ready: lambda run, site, message: run.site_ready(site),
    Ended: lambda run, site, message: run.site_ended(site),
    LogChunk: _log_chunk,
    LoggedMetric: _metric,
    SiteNotice: lambda run, site, message: run.notice(f"{site}: {message.message}", site),
    JobFailed: _failed,
}


def append_site_log(run: JobRun, site: str, text: str, file_name: str = "log.txt") -> None:
    """A chunk of a site's live log (its records, log.json, or its raw output, log.txt); the
    full files the site uploads at the end replace them."""
    dest = run.paths.site_log(site).with_name(file_name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and dest.stat().st_size + len(text) > MAX_LOG_BYTES:
        return
    with dest.open("a", encoding="utf-8") as f:
        f.write(text)


def result_limit(ctx: ServerContext, model_bytes: int) -> int:
    """The most bytes a result may take for a task whose model took ``model_bytes``."""
    return result_bound(model_bytes, ctx.result_floor_bytes)


def too_large(ctx: ServerContext, job_id: str, task_id: str, model_bytes: int, size: str) -> ShoalError:
    return ShoalError(
        "RESULT_TOO_LARGE",
        f"{size}; task {task_id} of job {job_id} takes at most {result_limit(ctx, model_bytes)} bytes",
        factor=RESULT_SIZE_FACTOR,
        floor=ctx.result_floor_bytes,
    )


def result_header(raw: Any) -> ResultInfo:
    """What a site says about its result, checked before the workflow sees it: the examples it
    trained on (a whole number, 0 allowed: FedAvg then leaves the update out), metrics that are
    numbers, meta that is an object (``shoal.wire.results``). INVALID_ARGS otherwise."""
    try:
        return checked_result_info(raw)
    except BadMessage as exc:
        raise ShoalError("INVALID_ARGS", str(exc)) from None


def take_result(run: JobRun, site: str, task: TaskState, checked: Path, header: ResultInfo) -> None:
    """A complete, checked result: into place, and its path to the workflow."""
    final = run.result_path(task.task_id, site)
    checked.replace(final)
    run.on_result(site, task, final, header)


async def receive_result(
    request: web.Request,
    tmp: Path,
    limit: int,
    refused: Callable[[str], ShoalError],
    still_open: Callable[[], bool],
    closed: Callable[[], ShoalError],
) -> web.Response | None:
    """Stream a site's result upload into ``tmp``, at most ``limit`` bytes (``refused`` says
    why past it), and check it is a safetensors file. None when ``tmp`` holds the complete,
    checked result; else the answer to give (409: the site and the server start over).

    Uploads resume: the site sends ``?offset=N``, the bytes it knows arrived. A refused upload
    leaves nothing; only a transfer that broke or stalled keeps what arrived, for the site to
    resume. ``still_open`` is asked after each wait (the task may close meanwhile: ``closed``)."""
    raw_total = request.headers.get("X-Shoal-Total")
    total = small_number(raw_total, 20) if raw_total is not None else None
    if total is not None and total > limit:
        raise refused(f"{total} bytes announced")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    # Anything but the offset the server holds is refused (409) with what it then holds, nothing.
    offset = small_number(request.query.get("offset", "0"), 20)
    held = tmp.stat().st_size if tmp.exists() else 0
    if offset is None or (offset != 0 and offset != held):
        tmp.unlink(missing_ok=True)
        return json_response({"error_code": "INVALID_ARGS", "received": 0}, status=409)
    try:
        with bulk_reads(request.transport):
            await save_body(request, tmp, limit, append=offset > 0)
    except ShoalError as exc:
        if exc.code == "TIMEOUT":  # the site went quiet: what arrived stays for it to resume
            raise
        tmp.unlink(missing_ok=True)
        if exc.code == "UPLOAD_TOO_LARGE":
            raise refused("more bytes came") from exc
        raise
    if not still_open():  # its round closed while it came (its file went)
        tmp.unlink(missing_ok=True)
        raise closed()
    if raw_total is not None and tmp.stat().st_size != total:
        tmp.unlink(missing_ok=True)
        return json_response({"error_code": "INVALID_ARGS", "received": 0}, status=409)
    try:
        await asyncio.to_thread(check_safetensors, tmp)
        if not still_open():  # ... or while it was checked
            raise closed()
    except ShoalError:
        tmp.unlink(missing_ok=True)
        raise
    return None
