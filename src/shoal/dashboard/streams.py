"""What the dashboard pushes to the page: server-sent events, one stream per open view.

The page never polls: it opens an EventSource and draws what arrives. This process follows the
server for it: a job through the server's change events (the long poll ``job monitor`` holds,
``/api/v1/jobs/{id}/events``), answered the moment the job changes, then the job's curves
(``/series``); its logs as ``job logs --follow`` reads them (once a second while it runs, only
the new lines sent on); the job list and the sites by asking every few seconds (the server has
no change feed for them), sending only what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal.dashboard.relay import Relay
from shoal.errors import ShoalError
from shoal.wire.jsonout import dumps

HOLD = 10.0  # seconds one upstream long poll waits for a change (a thread each meanwhile)
LIST_EVERY = 2.0  # seconds between looks at the job list
SITES_EVERY = 3.0  # ... and at the sites
LOGS_EVERY = 1.0  # ... and at a running job's logs (job logs --follow's pace)
SERIES_EVERY = 0.5  # at most this often the curves of a job whose metrics arrive in a flood
RETRY = 2.0  # seconds before asking again after the server did not answer
JOBS_SHOWN = 200
LOG_CHARS_SENT = 256 * 1024  # at most this much of a log is sent at once (the page keeps a tail)
#: Errors after which a job's stream has nothing more to follow.
GONE = frozenset({"JOB_NOT_FOUND", "NOT_AUTHORIZED", "STUDY_NOT_FOUND", "INVALID_ARGS"})

Send = Callable[[str, Any], Awaitable[None]]


async def open_stream(request: web.Request) -> tuple[web.StreamResponse, Send]:
    """An event stream to the page, and the function that sends one event on it."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def send(event: str, data: Any) -> None:
        await response.write(f"event: {event}\ndata: {dumps(data)}\n\n".encode())

    return response, send


async def follow_list(send: Send, fetch: Callable[[], Awaitable[Any]], every: float) -> None:
    """Send ``fetch()``'s answer whenever it differs from the last one sent, until the page
    goes (its write fails); a server that does not answer is told to the page, then retried."""
    last: Any = None
    while True:
        try:
            now = await fetch()
        except ShoalError as err:
            await send("failure", err.to_wire())
            await asyncio.sleep(RETRY)
            continue
        if now != last:
            await send("update", now)
            last = now
        await asyncio.sleep(every)


async def follow_job(send: Send, relay: Relay, job_id: str) -> None:
    """A job's page: its rights (once), then its meta and curves each time it changes, its
    logs as they grow, and ``end`` once it is over and its last logs are sent."""
    while True:  # the page needs them to show anything: ask until the server answers
        try:
            rights: dict[str, bool] = await relay.call("job_rights", job_id, relay.study)
            break
        except ShoalError as err:
            await send("failure", err.to_wire())
            if err.code in GONE:
                await send("end", {})
                return
            await asyncio.sleep(RETRY)
    await send("rights", rights)
    ended = asyncio.Event()
    logs = asyncio.create_task(follow_logs(send, relay, job_id, ended)) if rights.get("view_logs") else None
    try:
        await _follow_changes(send, relay, job_id, rights, ended)
        if logs is not None:
            await logs
        await send("end", {})
    finally:
        if logs is not None and not logs.done():
            logs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await logs


async def _follow_changes(
    send: Send, relay: Relay, job_id: str, rights: dict[str, bool], ended: asyncio.Event
) -> None:
    version = -1
    series_at = 0.0
    while True:
        try:
            answer = await relay.call("job_events", job_id, relay.study, version, HOLD)
        except ShoalError as err:
            await send("failure", err.to_wire())
            if err.code in GONE:
                ended.set()
                return
            await asyncio.sleep(RETRY)
            continue
        terminal = bool(answer["terminal"])
        if answer["version"] != version or terminal:
            version = answer["version"]
            await send("meta", answer["job"])
            pause = series_at + SERIES_EVERY - time.monotonic()
            if pause > 0 and not terminal:
                await asyncio.sleep(pause)
            await send("series", await _series(relay, job_id, terminal, rights))
            series_at = time.monotonic()
        if terminal:
            ended.set()
            return


async def _series(relay: Relay, job_id: str, terminal: bool, rights: dict[str, bool]) -> dict[str, Any]:
    """The job's curves from the server's live view; for a finished job it no longer keeps,
    from its metrics_summary.json (as ``job plot`` reads them, when the admin may download)."""
    try:
        series: dict[str, Any] = await relay.call("job_series", job_id, relay.study)
        return series
    except ShoalError as err:
        if err.code == "JOB_NOT_RUNNING" and not terminal:
            return {"global": {}, "sites": {}}  # not started yet: no curve so far
        if err.code != "JOB_NOT_RUNNING" or not rights.get("download_job"):
            return {"global": {}, "sites": {}, "unavailable": err.message}
    from shoal.cli.job_plot import GLOBAL, read_summary, summary_series

    try:
        summary = await relay.run(lambda client: read_summary(client, job_id, relay.study))
    except ShoalError as err:
        return {"global": {}, "sites": {}, "unavailable": err.message}
    _, by_metric = summary_series(summary)
    out: dict[str, Any] = {"global": {}, "sites": {}}
    for metric, curves in by_metric.items():
        for who, points in curves.items():
            target = out["global"] if who == GLOBAL else out["sites"].setdefault(who, {})
            target[metric] = [list(p) for p in points]
    return out


async def follow_logs(send: Send, relay: Relay, job_id: str, ended: asyncio.Event) -> None:
    """Each site's (and the server's) new log lines, rendered as ``job logs`` renders records;
    after the job ended, one last look (the sites' final uploads)."""
    from shoal.cli.job_observe import records_as_text

    sent: dict[str, int] = {}
    while True:
        final = ended.is_set()
        try:
            answer = await relay.call("job_logs", job_id, relay.study, "all", "log.json")
        except ShoalError as err:
            await send("logs_failure", err.to_wire())
            answer = {"logs": {}}
        fresh: dict[str, dict[str, Any]] = {}
        for site, text in answer["logs"].items():
            rendered = records_as_text(text)
            start = sent.get(site, 0)
            reset = len(rendered) < start  # replaced by a shorter file (a site's final upload)
            if reset:
                start = 0
            if len(rendered) > start or reset:
                piece = rendered[start:]
                fresh[site] = {"text": piece[-LOG_CHARS_SENT:], "reset": reset or start == 0}
            sent[site] = len(rendered)
        if fresh:
            await send("logs", fresh)
        if final:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), LOGS_EVERY)
