"""Run a job on this machine with N virtual sites: no server, no certificates, same results.

    from shoal.simulator.engine import simulate
    workspace = simulate(Path("examples/hello-numpy"), n_sites=100, workers=2)
    # workspace / "FL_global_model.safetensors", "metrics_summary.json", "site-7/log.txt", ...

The job's workflow runs here, in this process, exactly as the job controller runs it in
production, but its ``WorkflowContext`` talks to a ``PoolTransport`` instead of the server.
Sites ``site-1..site-N`` are multiplexed over a bounded pool of worker processes: each task
for a site is one run of the site's training script in a worker (see ``sim_worker``), through
the real client API. Why this shape, and what it cannot do: docs/simulator.md and
docs/decisions/0006-simulator.md. The whole pool is shut down before this returns: workers
still running a script when the job has ended (a round past its deadline), or when Ctrl-C or
SIGTERM stops the simulation, are killed with every process their scripts started.

Worker processes are fresh interpreters that import only shoal's worker module (not the calling
program's main module), and only JSON passes between them and this process (no pickle).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.runtime.controller import resolve_workflow
from shoal.simulator.pool import IDLE_EXIT_GRACE, WorkerPool
from shoal.simulator.transport import PoolTransport, RoundCallback, SiteCallback
from shoal.simulator.worker import SiteTask, forget_job_modules
from shoal.wire.divergence import divergence_notices
from shoal.wire.jobdef import (
    ALL_SITES,
    SERVER_CONFIG,
    JobDefinition,
    check_min_clients,
    client_command,
    eligible_sites,
    load_job_definition,
    tracker_names,
)
from shoal.workflows.base import RoundFailed, WorkflowContext
from shoal.workflows.update_checks import UpdateChecks

log = logging.getLogger("shoal.simulator")

#: Sub-folders of the output folder the simulator owns (it refuses a folder that has any).
OUTPUT_PARTS = ("job", "run", "sites", "workspace")
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


@dataclass
class SimulationReport:
    """How a simulated job went: what ``shoal simulate --format json`` prints as ``data``."""

    job_name: str
    job_id: str
    status: str
    reason: str
    sites: int
    workers: int
    out_dir: str
    workspace: str
    global_model: str | None
    metrics_summary: str | None
    duration_s: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    first_error: dict[str, Any] | None = None
    site_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    #: What a user should know of the run: a diverged loss (shoal.wire.divergence), as a
    #: job's ``notices`` say it on a server.
    notices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED_OK"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate(
    job_dir: Path,
    n_sites: int,
    workers: int | None = None,
    out_dir: Path | None = None,
    *,
    checks: UpdateChecks | None = None,
) -> Path:
    """Run the job in ``job_dir`` with ``n_sites`` virtual sites over ``workers`` processes
    (default: one per CPU) and return the result workspace (``<out_dir>/workspace``).
    ``checks`` are what each site's update must pass, as a server's ``local/limits.json``
    sets them (default: a server's defaults, non-finite values refused).

    Raises ShoalError: INVALID_ARGS (n_sites or workers < 1, an output folder already used),
    the job-folder codes of ``load_job_definition``, MIN_CLIENTS_UNSATISFIABLE, and
    SIMULATION_FAILED (with the report as ``data``) when the job itself failed.
    """
    report = run_simulation(job_dir, n_sites, workers=workers, out_dir=out_dir, checks=checks)
    if not report.ok:
        raise failure(report)
    return Path(report.workspace)


def failure(report: SimulationReport) -> ShoalError:
    return ShoalError(
        "SIMULATION_FAILED",
        report.reason,
        data=report.as_dict(),
        status=report.status,
        workspace=report.workspace,
    )


def run_simulation(
    job_dir: Path,
    n_sites: int,
    *,
    workers: int | None = None,
    out_dir: Path | None = None,
    on_round: RoundCallback | None = None,
    checks: UpdateChecks | None = None,
    on_site: SiteCallback | None = None,
    ray: str | None = None,
) -> SimulationReport:
    """Like ``simulate`` but returns the report whether the job succeeded or failed;
    ``on_round`` is called after each round with ``{"round", "metrics", "sites", "seconds"}``,
    ``on_site`` each time a site's answer is taken (shoal.simulator.transport.SiteCallback).
    ``ray``: run the sites as actors on the Ray cluster at that address (``auto``: the one this
    machine belongs to) instead of local worker processes (shoal.simulator.raypool)."""
    if isinstance(n_sites, bool) or not isinstance(n_sites, int) or n_sites < 1:
        raise ShoalError("INVALID_ARGS", f"the number of sites must be at least 1, got {n_sites!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ShoalError("INVALID_ARGS", f"the number of workers must be at least 1, got {workers!r}")
    jobdef = load_job_definition(Path(job_dir))
    every_site = [f"site-{i}" for i in range(1, n_sites + 1)]
    check_min_clients(jobdef, every_site)
    sites = eligible_sites(jobdef, every_site)
    site_app = _site_apps(jobdef, sites)
    for app in set(site_app.values()):  # bad input is refused before anything is written
        _client_entry(Path(job_dir) / app)
    ray_pool = None
    if ray is not None:  # joined before anything is written: a cluster that is not there changes nothing
        from shoal.simulator.raypool import RayPool

        ray_pool = RayPool(ray, workers, len(sites), Path(job_dir))
    try:
        out = _output_folder(out_dir, jobdef.name)
    except BaseException:
        if ray_pool is not None:
            ray_pool.stop(grace=0.0)
        raise
    shutil.copytree(Path(job_dir), out / "job", ignore=shutil.ignore_patterns("__pycache__"))
    entries = {app: _client_entry(out / "job" / app) for app in set(site_app.values())}
    pool_size = ray_pool.size if ray_pool is not None else min(workers or os.cpu_count() or 1, len(sites))
    job_id = str(secrets.randbelow(2**53 - 1) + 1)  # like the server's ids (decisions/0003)

    def make_spec(site: str, task: dict[str, Any]) -> SiteTask:
        app = site_app[site]
        entry, argv = entries[app]
        return SiteTask(
            site=site,
            job_id=job_id,
            app_dir=str(out / "job" / app),
            entry=entry,
            argv=argv,
            work_dir=str(out / "sites" / site),
            log_path=str(out / "workspace" / site / "log.txt"),
            task=task,
        )

    started = time.monotonic()
    with ray_pool if ray_pool is not None else WorkerPool(pool_size) as pool:
        transport = PoolTransport(
            pool, make_spec, max_in_flight=2 * pool_size, on_round=on_round, on_site=on_site
        )
        status, reason = _run_controller(
            jobdef, out, job_id, sites, transport, scale=-(-len(sites) // pool_size), checks=checks
        )
        # The job is over: a run still going (a script hung past the round deadline) has no
        # one left to answer, so its worker is killed at once rather than waited for.
        pool.stop(grace=0.0 if transport.unfinished_runs else IDLE_EXIT_GRACE)
    workspace = out / "workspace"
    for site in sites:  # every site that took part has a log, as after a real run
        (workspace / site).mkdir(parents=True, exist_ok=True)
        (workspace / site / "log.txt").touch()
    shutil.rmtree(out / "run", ignore_errors=True)
    model, summary = workspace / "FL_global_model.safetensors", workspace / "metrics_summary.json"
    notices = divergence_notices(transport.rounds)
    if tracker_names(jobdef.meta) and summary.exists():
        notices += _track(jobdef, job_id, out, summary)
    return SimulationReport(
        job_name=jobdef.name,
        job_id=job_id,
        status=status,
        reason=reason,
        sites=len(sites),
        workers=pool_size,
        out_dir=str(out),
        workspace=str(workspace),
        global_model=str(model) if model.exists() else None,
        metrics_summary=str(summary) if summary.exists() else None,
        duration_s=time.monotonic() - started,
        rounds=transport.rounds,
        first_error=transport.first_error if status != "FINISHED_OK" else None,
        site_metrics=transport.site_metrics,
        peak_rss_mib=_peak_rss(transport.worker_rss_kib),
        notices=notices,
    )


def _track(jobdef: JobDefinition, job_id: str, out: Path, summary: Path) -> list[str]:
    """The job's trackers, written from its summary once the run ended, where a server would
    put them: the run's ``workspace/`` (TensorBoard, W&B offline), MLflow to
    ``SHOAL_MLFLOW_TRACKING_URI`` or a SQLite store in ``OUT/mlflow/``. A failing one is a
    notice, never a failed run."""
    from shoal.scheduler.tracking import RunInfo, make_trackers, track_summary

    trackers = make_trackers(tracker_names(jobdef.meta), out / "workspace", out)
    run = RunInfo(int(job_id), jobdef.name, "simulation")
    return track_summary(trackers, run, json.loads(summary.read_text()))


def _site_apps(jobdef: JobDefinition, sites: list[str]) -> dict[str, str]:
    """Which app each simulated site runs (deploy_map: "@ALL" or named sites)."""
    out: dict[str, str] = {}
    for app, targets in jobdef.site_apps.items():
        for site in sites if targets == ALL_SITES else [s for s in targets if s in sites]:
            out[site] = app
    return out


def _output_folder(out_dir: Path | None, job_name: str) -> Path:
    if out_dir is None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in job_name)
        return Path(tempfile.mkdtemp(prefix=f"shoal-simulate-{safe}-")).resolve()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ShoalError("INVALID_ARGS", f"the output folder {out} is a file", hint="Choose another -o.")
    used = [p for p in OUTPUT_PARTS if (out / p).exists()]
    if used:
        raise ShoalError(
            "INVALID_ARGS",
            f"the output folder {out} already holds {', '.join(used)} (an earlier simulation?)",
            hint="Choose another -o, or remove the folder first.",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _client_entry(app_dir: Path) -> tuple[tuple[str, str], tuple[str, ...]]:
    """What a site would start for this app (``client_command``), as a worker runs it."""
    try:
        argv = client_command(app_dir)
    except ValueError as exc:
        raise ShoalError("JOB_CONFIG_INVALID", str(exc)) from None
    if argv[0] == "-m":
        return ("module", argv[1]), tuple(argv[2:])
    return ("script", argv[0]), tuple(argv[1:])


def _run_controller(
    jobdef: JobDefinition,
    out: Path,
    job_id: str,
    sites: list[str],
    transport: PoolTransport,
    *,
    scale: int,
    checks: UpdateChecks | None,
) -> tuple[str, str]:
    """Run the server app's workflow here, as ``controller_main`` does in its own process:
    its logs and output go to ``workspace/server/log.txt``; returns (status, reason)."""
    app_dir = out / "job" / jobdef.server_app
    server_log = out / "workspace" / "server" / "log.txt"
    server_log.parent.mkdir(parents=True, exist_ok=True)
    with _server_process_view(app_dir, server_log):
        try:
            config = json.loads(app_dir.joinpath(*SERVER_CONFIG).read_text())
            cls, args = resolve_workflow(config)
            args = _scaled_deadline(args, scale)
            ctx = WorkflowContext(
                transport,
                job_id=job_id,
                sites=sites,
                run_dir=out / "run",
                workspace=out / "workspace",
                app_dir=app_dir,
                min_clients=jobdef.min_clients,
                checks=checks,
            )
            cls(ctx, **args).run()
        except RoundFailed as exc:
            logging.getLogger("shoal.workflow").error("job failed: %s", exc)
            if exc.site is not None and transport.first_error is None:
                # a site's update refused by the workflow: that site is the job's first error,
                # as the server records it
                transport.first_error = {"site": exc.site, "type": "RoundFailed", "message": str(exc)}
            return "FAILED", f"RoundFailed: {exc}"
        except Exception as exc:
            traceback.print_exc()
            return "FINISHED_EXCEPTION", f"{type(exc).__name__}: {exc}"
        finally:
            transport.close()
    return "FINISHED_OK", "finished"


def _scaled_deadline(args: dict[str, Any], scale: int) -> dict[str, Any]:
    """A round deadline budgets sites training side by side; here each worker runs ``scale``
    sites one after another, so the deadline stretches by that factor."""
    timeout = args.get("round_timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0 and scale > 1:
        return {**args, "round_timeout": float(timeout) * scale}
    return args


@contextlib.contextmanager
def _server_process_view(app_dir: Path, server_log: Path) -> Iterator[None]:
    """The controller's surroundings, undone afterwards: the server app's custom code importable,
    logging at INFO and stdout/stderr into the server log (stdout may carry the CLI's JSON)."""
    custom = str(app_dir / "custom")
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    root = logging.getLogger()
    saved_level = root.level
    with server_log.open("a") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        sys.path.insert(0, custom)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            root.removeHandler(handler)
            root.setLevel(saved_level)
            sys.path[:] = saved_path
            forget_job_modules(str(app_dir), saved_modules)


def _peak_rss(worker_rss_kib: dict[int, int]) -> dict[str, float]:
    """Peak resident memory in MiB: this process (the controller) and the workers (each one's
    own peak, summed: an upper bound of what they held at once). ru_maxrss is KiB on Linux."""
    unit = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024
    controller = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    workers = sum(worker_rss_kib.values()) * unit
    return {
        "controller": round(controller, 1),
        "workers": round(workers, 1),
        "worker_max": round(max(worker_rss_kib.values(), default=0) * unit, 1),
        "total": round(controller + workers, 1),
    }
