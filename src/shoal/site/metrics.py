"""A site's own ``GET /metrics`` in Prometheus' text format: off unless ``local/metrics.json`` says.

The agent always counts (plain integers in ``SiteCounters``: jobs, tasks, results, logged
metrics, model bytes each way, its control channel); this serves them when the site's operator
asks for it in ``<site kit>/local/metrics.json``::

    {"host": "127.0.0.1", "port": 9102}    # both optional (these are the defaults); port 0: the OS chooses

On a loopback address only, as plain HTTP (decisions/0030): whoever can open a socket on the
site's host may read it (the counters hold no data and no name but the site's own). Another
address is refused at start: a site's certificate is a client's only (it cannot serve TLS that a
scraper could verify, by design: a site key must not pose as a server), so a scrape from
elsewhere goes through what the operator runs on the host (Prometheus in agent mode, a reverse
proxy with its own certificate, an SSH tunnel). The address bound is logged and written to
``<site workspace>/metrics_address.json``.

prometheus-client (the ``metrics`` extra) is imported only when a scrape comes; a site without
it answers METRICS_UNAVAILABLE (501) and runs as before.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.security.localfiles import json_object, operator_file_error, read_operator_json

log = logging.getLogger("shoal.site")

METRICS_FILE = Path("local") / "metrics.json"
ADDRESS_FILE = "metrics_address.json"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KEYS = ("host", "port")


@dataclass
class SiteCounters:
    """What the agent did since it started, counted whether or not anything scrapes it."""

    jobs_started: int = 0
    tasks_received: int = 0
    results_sent: int = 0
    metrics_logged: int = 0
    bytes_from_server: int = 0  # task models (inline or streamed)
    bytes_to_server: int = 0  # results (inline or uploaded)
    connected: bool = False
    connections: int = 0  # control channels opened; each after the first is a reconnect
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int


def load_metrics_config(kit_dir: Path) -> MetricsConfig | None:
    """The site's ``local/metrics.json`` checked (None: no file, no /metrics). A value of the
    wrong type, an unknown key, or an address that is not loopback refuses to start the agent
    (LOCAL_FILE_ERROR naming the file and the key)."""
    path = kit_dir / METRICS_FILE
    raw = read_operator_json(path)
    if raw is None:
        return None
    data = json_object(raw, path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise operator_file_error(
            path, f"unknown key(s) {', '.join(map(repr, unknown))}; it takes host, port"
        )
    host = data.get("host", "127.0.0.1")
    port = data.get("port", 9102)
    if not isinstance(host, str) or not _is_loopback(host):
        raise operator_file_error(
            path,
            f"'host' must be a loopback address (127.0.0.1, ::1, localhost), not {host!r:.60}: a site "
            "serves its metrics to its own host only; scrape it from there (Prometheus in agent "
            "mode, a reverse proxy with its own certificate, an SSH tunnel)",
        )
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise operator_file_error(path, f"'port' must be a whole number 0-65535, not {port!r:.60}")
    return MetricsConfig(host, port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name: whatever it resolves to, it is not known to be loopback


def render(counters: SiteCounters, site: str, jobs_running: int) -> bytes:
    """The exposition text; METRICS_UNAVAILABLE where prometheus-client is not installed."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise ShoalError("METRICS_UNAVAILABLE") from None

    c = counters

    class _Collector:
        def collect(self) -> list[Any]:
            moved = CounterMetricFamily(
                "shoal_site_transfer_bytes",
                "Model bytes moved between this site and the server (task models in, results out).",
                labels=["direction"],
            )
            moved.add_metric(["from_server"], c.bytes_from_server)
            moved.add_metric(["to_server"], c.bytes_to_server)
            info = GaugeMetricFamily("shoal_site_info", "This site's name (always 1).", labels=["site"])
            info.add_metric([site], 1)
            return [
                info,
                CounterMetricFamily(
                    "shoal_site_jobs_started", "Jobs deployed to this site.", value=c.jobs_started
                ),
                GaugeMetricFamily("shoal_site_jobs_running", "Jobs this site runs now.", value=jobs_running),
                CounterMetricFamily(
                    "shoal_site_tasks_received",
                    "Tasks the server sent that this site took.",
                    value=c.tasks_received,
                ),
                CounterMetricFamily(
                    "shoal_site_results_sent",
                    "Results this site delivered to the server.",
                    value=c.results_sent,
                ),
                CounterMetricFamily(
                    "shoal_site_metrics_logged",
                    "Values this site's training scripts logged (sent or kept here).",
                    value=c.metrics_logged,
                ),
                moved,
                GaugeMetricFamily(
                    "shoal_site_connected",
                    "1 while the control channel to the server is open, else 0.",
                    value=int(c.connected),
                ),
                CounterMetricFamily(
                    "shoal_site_reconnects",
                    "Control channels opened again after the first (the link dropped, the server restarted).",
                    value=max(0, c.connections - 1),
                ),
                GaugeMetricFamily(
                    "shoal_site_uptime_seconds",
                    "Seconds since the agent started.",
                    value=time.time() - c.started_at,
                ),
            ]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return bytes(generate_latest(registry))


async def serve(
    config: MetricsConfig, workspace: Path, site: str, counters: SiteCounters, jobs: dict[str, Any]
) -> web.AppRunner:
    """Start serving /metrics; the runner to clean up. The address bound is logged and written
    to ``<workspace>/metrics_address.json`` (``{"url": ...}``)."""

    async def metrics(request: web.Request) -> web.Response:
        try:
            body = render(counters, site, len(jobs))
        except ShoalError as err:
            return _error(err)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, config.host, config.port)
    await tcp.start()
    port = runner.addresses[0][1]  # the one chosen when the file said 0
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}/metrics"
    (workspace / ADDRESS_FILE).write_text(json.dumps({"url": url}) + "\n")
    log.info("serving this site's metrics at %s", url)
    return runner


def _error(err: ShoalError) -> web.Response:
    body = {"error_code": err.code, "message": err.message, "hint": err.hint}
    return web.json_response(body, status=err.http_status)
