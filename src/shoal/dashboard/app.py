"""The dashboard's web server (aiohttp): its page, its event streams, the actions it relays.

Routes (every one behind ``guard``):

- ``/`` the page (one HTML file; the script draws the views ``#/jobs``, ``#/sites``, ``#/job/ID``)
  and ``/static/...`` its script and style, shipped in the package.
- ``/api/session`` who the dashboard acts as, and the session's CSRF token for the page.
- ``/events/jobs``, ``/events/sites``, ``/events/jobs/{id}`` the event streams (``streams``).
- ``/api/jobs/{id}/abort`` (POST), ``/clone`` (POST), ``/api/jobs/{id}`` (DELETE) and
  ``/api/jobs/{id}/download?only=...``: relayed to the server, which decides with the admin's
  role; its refusal comes back as the catalogue's error, for the page to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.api.kits import AdminKit
from shoal.dashboard.guard import Guard, add_headers, error_response, middleware
from shoal.dashboard.relay import Relay
from shoal.dashboard.streams import (
    JOBS_SHOWN,
    LIST_EVERY,
    SITES_EVERY,
    follow_job,
    follow_list,
    open_stream,
)
from shoal.errors import ShoalError

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
PARTS = ("model", "metrics", "logs", "job")

GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)


def _job_id(request: web.Request) -> str:
    """The job id of the path: digits only, so nothing else is ever put into a server request."""
    raw = request.match_info["job_id"]
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 20):
        raise ShoalError("INVALID_ARGS", f"{raw[:40]!r} is not a job id")
    return raw


async def page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=STATIC_FILES[name], charset="utf-8")


async def session(request: web.Request) -> web.Response:
    kit = request.app[RELAY].kit
    return web.json_response(
        {
            "csrf": request.app[GUARD].csrf_of(request),
            "admin": {"name": kit.name, "org": kit.org, "role": kit.role},
            "project": kit.project,
            "server": f"{kit.host}:{kit.port}",
            "study": request.app[RELAY].study,
        }
    )


async def jobs_events(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    response, send = await open_stream(request)

    async def fetch() -> Any:
        return await relay.call("list_jobs", relay.study, reverse=True, max_results=JOBS_SHOWN)

    with contextlib.suppress(ConnectionError):
        await follow_list(send, fetch, LIST_EVERY)
    return response


async def sites_events(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    response, send = await open_stream(request)

    async def fetch() -> Any:
        return (await relay.call("system_sites"))["sites"]

    with contextlib.suppress(ConnectionError):
        await follow_list(send, fetch, SITES_EVERY)
    return response


async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = _job_id(request)
    response, send = await open_stream(request)
    with contextlib.suppress(ConnectionError):
        await follow_job(send, request.app[RELAY], job_id)
    return response


async def _act(request: web.Request, method: str) -> web.Response:
    relay = request.app[RELAY]
    try:
        result = await relay.call(method, _job_id(request), relay.study)
    except ShoalError as err:  # the server's refusal (its role check above all), shown as is
        return error_response(err)
    return web.json_response(result)


async def abort_job(request: web.Request) -> web.Response:
    return await _act(request, "abort_job")


async def clone_job(request: web.Request) -> web.Response:
    return await _act(request, "clone_job")


async def delete_job(request: web.Request) -> web.Response:
    return await _act(request, "delete_job")


async def download(request: web.Request) -> web.StreamResponse:
    """The job's result (or the parts ``only`` names), fetched from the server into a
    temporary file and handed to the browser as an attachment."""
    relay = request.app[RELAY]
    job_id = _job_id(request)
    only = [p for p in request.query.get("only", "").split(",") if p]
    if any(p not in PARTS for p in only):
        raise ShoalError("INVALID_ARGS", f"only takes {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory(prefix="shoal-dashboard-") as tmp:
        archive = Path(tmp) / "result.zip"
        await relay.call("download_result", job_id, relay.study, archive, only or None)
        name = f"job-{job_id}{'-' + '-'.join(only) if only else ''}.zip"
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
        )
        response.content_length = archive.stat().st_size
        await response.prepare(request)
        with archive.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
    return response


def build_app(guard: Guard, relay: Relay) -> web.Application:
    app = web.Application(middlewares=[middleware(guard)])
    app[GUARD] = guard
    app[RELAY] = relay
    app.on_response_prepare.append(add_headers)
    app.add_routes(
        [
            web.get("/", page),
            web.get("/static/{name}", static),
            web.get("/api/session", session),
            web.get("/events/jobs", jobs_events),
            web.get("/events/sites", sites_events),
            web.get("/events/jobs/{job_id}", job_events),
            web.post("/api/jobs/{job_id}/abort", abort_job),
            web.post("/api/jobs/{job_id}/clone", clone_job),
            web.delete("/api/jobs/{job_id}", delete_job),
            web.get("/api/jobs/{job_id}/download", download),
        ]
    )
    return app


async def serve(kit: AdminKit, study: str, host: str, port: int, announce: Any) -> None:
    """Serve until SIGINT or SIGTERM; ``announce(url)`` once listening (port 0: the OS's)."""
    guard = Guard()
    relay = Relay(kit, study)
    runner = web.AppRunner(build_app(guard, relay), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ShoalError(
                "INVALID_ARGS", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        bound = int(runner.addresses[0][1])
        address = guard.bind(host, bound)
        announce(f"{address}/?token={guard.token}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        relay.close()
