"""Admin routes that change a job: abort, delete, clone."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shoal.errors import ShoalError
from shoal.server.context import CTX
from shoal.server.middleware import identity_of
from shoal.server.submission import release_blob
from shoal.server.views import json_response
from shoal.store.base import Submitter
from shoal.wire import routes as paths
from shoal.wire.status import JobStatus


async def abort_job(request: web.Request) -> web.Response:
    """Answers once the job is ABORTED: sites confirmed, or the stragglers are named in the reason."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "manage_job")
    final = await ctx.scheduler.abort(job, identity_of(request).name)
    return json_response(
        {"job_id": str(final.job_id), "status": final.status.value, "reason": final.status_reason}
    )


async def delete_job(request: web.Request) -> web.Response:
    """Remove the job, its files and (if no clone shares it) its archive; keep token records as deleted."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "manage_job")
    if job.status in (JobStatus.DISPATCHED, JobStatus.RUNNING):
        raise ShoalError(
            "JOB_NOT_DONE",
            f"current status: {job.status.value}",
            hint=f"Run 'shoal job abort {job.job_id}' first, or wait until it finishes.",
            job_id=str(job.job_id),
        )
    ident = identity_of(request)
    marked = ctx.store.delete_job(job.job_id, deleted_by=Submitter(ident.name, ident.org, ident.role or ""))
    ctx.scheduler.events.notify(job.job_id)
    await asyncio.to_thread(release_blob, ctx.store, ctx.blobs, job.content_sha256)
    await asyncio.to_thread(ctx.scheduler.job_files.delete, job.job_id)
    return json_response({"job_id": str(job.job_id), "submit_records_marked_deleted": marked})


async def clone_job(request: web.Request) -> web.Response:
    """A new job from the same stored content; the caller becomes its submitter."""
    ctx = request.app[CTX]
    job = ctx.job_in_study(request, "clone_job")
    ident = identity_of(request)
    clone, _ = ctx.store.create_job(
        study=job.study,
        name=job.name,
        meta=job.meta,
        content_sha256=job.content_sha256,
        submitter=Submitter(ident.name, ident.org, ident.role or ""),
        cloned_from=job.job_id,
    )
    ctx.scheduler.kick()
    return json_response({"source_job_id": str(job.job_id), "new_job_id": str(clone.job_id)}, status=201)


def routes() -> list[web.RouteDef]:
    return [
        web.post(paths.JOB_ABORT, abort_job),
        web.delete(paths.JOB, delete_job),
        web.post(paths.JOB_CLONE, clone_job),
    ]
