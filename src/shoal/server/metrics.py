"""``GET /metrics``: the server in Prometheus' text format, for operators' scrapers.

Behind the admin identity on the server's one port (decisions/0026): the scraper presents an
admin certificate of the project and needs the ``operate`` right, since the counts span every
study. Nothing here is kept by prometheus-client: the server counts in plain integers
(``ServerTotals``, ``RequestTimes``) whether or not the library is installed, and the library is
imported only when a scrape comes, to render them. A server without it answers
METRICS_UNAVAILABLE and runs as before.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.server.context import CTX, ServerContext
from shoal.server.middleware import Handler
from shoal.wire import routes as paths
from shoal.wire.status import JobStatus

#: Upper bounds (seconds) of the request-latency buckets: from a quick JSON answer to a long poll.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "(unmatched)"  # one label for every path no route serves: a scanner cannot add labels
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Timing:
    """One route's latency histogram: counts per bucket (not cumulative), their sum, and count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, requests at most that long) as the text format counts them."""
        out, running = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


class RequestTimes:
    """How long the server took to answer, per method and route template (``/api/v1/jobs/{job_id}``,
    never the path itself: labels stay bounded whatever callers send)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Timing] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        self.routes.setdefault((method, route), Timing()).observe(seconds)


TIMES_KEY: web.AppKey[RequestTimes] = web.AppKey("shoal_request_times", RequestTimes)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request, whatever its outcome (an error answer is a latency too)."""
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        method = request.method if request.method in _METHODS else "OTHER"
        request.app[TIMES_KEY].observe(method, route_label(request), time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


def _families(ctx: ServerContext, times: RequestTimes, store_bytes: dict[str, int]) -> Iterator[Any]:
    """The metric families of one scrape, built from the server's own counts."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    jobs = GaugeMetricFamily("shoal_jobs", "Jobs in the store by status (every study).", labels=["status"])
    counts = ctx.store.count_by_status()
    for status in JobStatus:
        jobs.add_metric([status.value], counts.get(status, 0))
    yield jobs
    yield GaugeMetricFamily(
        "shoal_jobs_running", "Jobs whose workflow runs now.", value=len(ctx.scheduler.runs)
    )
    totals = ctx.scheduler.totals
    yield CounterMetricFamily("shoal_rounds", "Rounds the workflows reported done.", value=totals.rounds_done)
    yield CounterMetricFamily("shoal_tasks_sent", "Tasks sent to sites.", value=totals.tasks_sent)
    yield CounterMetricFamily(
        "shoal_results_received",
        "Results the sites returned and the server kept.",
        value=totals.results_received,
    )
    yield CounterMetricFamily(
        "shoal_metrics_logged", "Metric values the training scripts logged.", value=totals.metrics_logged
    )
    moved = CounterMetricFamily(
        "shoal_transfer_bytes", "Model bytes moved between the server and its sites.", labels=["direction"]
    )
    moved.add_metric(["to_sites"], totals.bytes_to_sites)
    moved.add_metric(["from_sites"], totals.bytes_from_sites)
    yield moved
    yield GaugeMetricFamily(
        "shoal_sites_connected", "Sites with an open control channel.", value=len(ctx.sites.all())
    )
    yield GaugeMetricFamily(
        "shoal_sites_known", "Sites provisioned or seen since start.", value=len(ctx.known_sites())
    )
    store = GaugeMetricFamily("shoal_store_bytes", "Bytes the server's store takes on disk.", labels=["part"])
    for part, size in sorted(store_bytes.items()):
        store.add_metric([part], size)
    yield store
    yield GaugeMetricFamily(
        "shoal_uptime_seconds", "Seconds since the server started.", value=time.time() - ctx.started_at
    )
    latency = HistogramMetricFamily(
        "shoal_request_duration_seconds",
        "Time to answer a request, per method and route.",
        labels=["method", "route"],
    )
    for (method, route), timing in sorted(times.routes.items()):
        latency.add_metric([method, route], timing.cumulative(), sum_value=timing.total)
    yield latency


def _store_bytes(ctx: ServerContext) -> dict[str, int]:
    """The job archives and the database (with its write-ahead log); walked off the event loop."""
    sizes = {"blobs": ctx.blobs.total_bytes(), "database": 0}
    for name in ("store.db", "store.db-wal"):
        try:
            sizes["database"] += (ctx.workspace / name).stat().st_size
        except OSError:
            pass
    return sizes


def render(ctx: ServerContext, times: RequestTimes, store_bytes: dict[str, int]) -> bytes:
    """The exposition text; METRICS_UNAVAILABLE where prometheus-client is not installed."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise ShoalError("METRICS_UNAVAILABLE") from None

    class _Collector:
        def collect(self) -> Iterator[Any]:
            return _families(ctx, times, store_bytes)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return bytes(generate_latest(registry))


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.authorize(request, "operate")
    store_bytes = await asyncio.to_thread(_store_bytes, ctx)
    body = render(ctx, request.app[TIMES_KEY], store_bytes)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [web.get(paths.METRICS, metrics)]
