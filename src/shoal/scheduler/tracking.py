"""Experiment tracking written centrally by the server: TensorBoard event files, MLflow, and
Weights & Biases in offline mode.

A job names its trackers in meta.json (``"trackers": ["tensorboard", "mlflow"]``; recipes:
``trackers=[...]``). The server already receives every metric a training script logs
(``JobRun.site_metric``) and each round's aggregated metrics (the workflow's ``round``
message), so it writes them itself: the workflow runs confined (no network, no folder but its
own) and the sites' data never needs a tracker of theirs. One run per job; a metric is
``<site>/<key>`` (``global/<key>`` for the round's aggregate) with the round (from 0) as its
step.

Where they write is the operator's, never the job's: a job that chose a path or a tracking
server would make the server write or connect wherever the job liked. TensorBoard writes into
the job's ``workspace/tensorboard/`` (downloaded with the job), MLflow to
``SHOAL_MLFLOW_TRACKING_URI`` or else a SQLite store in ``<server workspace>/mlflow/``, W&B
into the job's ``workspace/wandb/`` as an offline run (never a network call: ``wandb sync``
uploads it, where and when its owner chooses; decisions/0033).

Trackers run on one thread per job, fed through a queue: the event loop never waits on a
disk or a tracking server, and never imports their libraries. A tracker that fails is dropped
for the rest of the job with a notice; the job goes on, and its metrics are in
metrics_summary.json whatever the trackers did.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal import settings
from shoal.wire.jobdef import tracker_names

log = logging.getLogger("shoal.scheduler")

__all__ = ["JobTracking", "RunInfo", "make_trackers", "track_summary", "tracker_names"]

CLOSE_GRACE = 60.0  # seconds the job's end waits for its trackers to write what they hold
BATCH_MAX = 1000  # points a tracker is handed at once
#: Points waiting for the trackers at most: a script that logs faster than a tracker writes
#: must not grow the server's memory without bound. Past it points are dropped, with a notice.
QUEUE_MAX = 100_000
MLFLOW_URI_ENV = settings.MLFLOW_TRACKING_URI
#: Written (not read) for W&B's helper process: its crash reports off (WandbTracker.open).
WANDB_ERROR_REPORTING_ENV = "WANDB_ERROR_REPORTING"


@dataclass(frozen=True)
class Point:
    key: str
    value: float
    step: int
    wall_time: float


@dataclass(frozen=True)
class RunInfo:
    """What names a job's run in a tracker."""

    job_id: int
    job_name: str
    study: str


class Tracker(Protocol):
    name: str

    def open(self, run: RunInfo) -> None: ...

    def log(self, points: list[Point]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Event files through tensorboardX, into ``folder`` (the job's workspace)."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: Any = None

    def open(self, run: RunInfo) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(self.folder), flush_secs=5)

    def log(self, points: list[Point]) -> None:
        for p in points:
            self._writer.add_scalar(p.key, p.value, global_step=p.step, walltime=p.wall_time)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


_MLFLOW_UNSAFE = re.compile(r"[^/\w.\- :]")
MLFLOW_KEY_MAX = 250  # MLflow's longest metric name


def mlflow_name(key: str) -> str:
    """``key`` as a metric name MLflow takes: characters it refuses become ``_``, and no empty,
    ``.`` or ``..`` path segment (it refuses a name that normalises to another). A site's
    script chooses its keys, so one odd key must not make MLflow refuse the whole batch and
    stop the tracker for everyone."""
    parts = [p for p in _MLFLOW_UNSAFE.sub("_", key).split("/") if p not in ("", ".", "..")]
    return ("/".join(parts) or "_")[:MLFLOW_KEY_MAX]


class MlflowTracker:
    """One MLflow run per job in the experiment named after the job, through ``MlflowClient``
    (never mlflow's process-wide active run: the server tracks many jobs at once)."""

    name = "mlflow"

    def __init__(self, tracking_uri: str, folder: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.folder = folder  # where a default store goes, made when the tracker starts
        self._client: Any = None
        self._run_id = ""

    def open(self, run: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self._client.get_experiment_by_name(run.job_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(run.job_name)
        )
        tags = {"shoal.job_id": str(run.job_id), "shoal.study": run.study, "shoal.job_name": run.job_name}
        created = self._client.create_run(experiment_id, tags=tags, run_name=f"job {run.job_id}")
        self._run_id = created.info.run_id

    def log(self, points: list[Point]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(mlflow_name(p.key), p.value, int(p.wall_time * 1000), p.step) for p in points]
        self._client.log_batch(self._run_id, metrics=metrics)

    def close(self) -> None:
        if self._client is not None and self._run_id:
            self._client.set_terminated(self._run_id)


class WandbTracker:
    """A Weights & Biases run in offline mode, its files in ``folder`` (the job's workspace):
    the server makes no network call for it, whatever the environment says (WANDB_MODE,
    WANDB_BASE_URL); ``wandb sync <folder>/wandb/offline-run-*`` uploads it later, by choice.

    One run per job among many at once (``reinit="create_new"``: never wandb's process-wide
    current run). W&B's own step only grows, but a round's aggregate arrives after its sites'
    values and possibly after the next round's first ones: each value is logged as a row with
    the round in a ``round`` column, which every metric takes as its x axis."""

    name = "wandb"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._run: Any = None

    def open(self, run: RunInfo) -> None:
        # wandb-core, the helper process wandb starts, reports its own crashes over the network
        # unless told not to (it inherits the server's environment); W&B's own dev builds set
        # the same variable the same way.
        os.environ[WANDB_ERROR_REPORTING_ENV] = "false"
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        offline = wandb.Settings(
            mode="offline",
            silent=True,
            console="off",  # the server's own stdout and stderr are left alone
            disable_git=True,
            save_code=False,
            x_disable_stats=True,  # no sampling of the server's machine
            x_disable_meta=True,
            x_save_requirements=False,
        )
        # Process-wide too: wandb's usage telemetry follows the process's settings (from the
        # environment: WANDB_MODE=online would send it), not the run's.
        wandb.setup(settings=offline)
        config = {"shoal.job_id": str(run.job_id), "shoal.study": run.study, "shoal.job_name": run.job_name}
        self._run = wandb.init(
            dir=str(self.folder),
            project=run.job_name,
            name=f"job {run.job_id}",
            id=str(run.job_id),
            group=run.study,
            config=config,
            reinit="create_new",
            settings=offline,
        )
        self._run.define_metric("round")
        self._run.define_metric("*", step_metric="round")

    def log(self, points: list[Point]) -> None:
        for p in points:
            self._run.log({"round": p.step, p.key: p.value})

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()


def default_mlflow_uri(server_workspace: Path) -> tuple[str, Path | None]:
    """The operator's tracking URI, else a SQLite store in the server's workspace (and the
    folder to make for it, made on the trackers' thread: a failure there is the tracker's)."""
    configured = settings.text(MLFLOW_URI_ENV)
    if configured:
        return configured, None
    folder = server_workspace / "mlflow"
    return f"sqlite:///{folder / 'mlflow.db'}", folder


def make_trackers(names: tuple[str, ...], job_workspace: Path, server_workspace: Path) -> list[Tracker]:
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(job_workspace / "tensorboard"))
        elif name == "mlflow":
            trackers.append(MlflowTracker(*default_mlflow_uri(server_workspace)))
        elif name == "wandb":
            trackers.append(WandbTracker(job_workspace))
    return trackers


def summary_points(summary: dict[str, Any]) -> list[Point]:
    """Every value of a ``metrics_summary.json`` as the server's trackers name it:
    ``<site>/<key>`` with the round as its step, each round's aggregate as ``global/<key>``."""
    now = time.time()
    points: list[Point] = []
    for site, logged in (summary.get("logged_metrics") or {}).items():
        for p in logged if isinstance(logged, list) else []:
            if _number(p.get("value")) and type(p.get("round")) is int:
                points.append(Point(f"{site}/{p.get('key')}", float(p["value"]), p["round"], now))
    for entry in summary.get("rounds") or []:
        for key, value in (entry.get("metrics") or {}).items():
            if _number(value) and type(entry.get("round")) is int:
                points.append(Point(f"global/{key}", float(value), entry["round"], now))
    return points


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def track_summary(trackers: list[Tracker], run: RunInfo, summary: dict[str, Any]) -> list[str]:
    """Write a finished run's summary to ``trackers`` at once (``shoal simulate``: no server
    received the values live); the notices of those that failed, each stopped, as on a server."""
    notices = []
    points = summary_points(summary)
    for tracker in trackers:
        step = "start"
        try:
            tracker.open(run)
            step = "write"
            tracker.log(points)
            step = "finish"
            tracker.close()
        except Exception as exc:  # an import, a store: none may fail the run
            notices.append(
                f"tracker {tracker.name} failed to {step} ({type(exc).__name__}: {str(exc)[:200]}); "
                "the metrics are still in metrics_summary.json"
            )
    return notices


class JobTracking:
    """A job's trackers on their own thread. ``log`` is called on the event loop and only
    queues; ``notice`` is called back on the loop for a tracker that failed."""

    def __init__(self, run: RunInfo, trackers: list[Tracker], notice: Callable[[str], None]) -> None:
        self.run = run
        self._trackers = trackers
        self._notice = notice
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[Point | None] = queue.SimpleQueue()
        self._overflowed = False
        self._thread = threading.Thread(target=self._work, name=f"tracking-{run.job_id}", daemon=True)
        self._thread.start()

    def log(self, key: str, value: float, step: int) -> None:
        if self._queue.qsize() >= QUEUE_MAX:
            if not self._overflowed:
                self._overflowed = True
                self._notice(
                    f"server: the trackers fell {QUEUE_MAX} points behind; later points were not "
                    "tracked (the job's metrics are still in metrics_summary.json)"
                )
            return
        self._queue.put(Point(key, float(value), step, time.time()))

    async def close(self) -> None:
        """Let the trackers write what they hold and end their run (bounded: CLOSE_GRACE)."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, CLOSE_GRACE)
        if self._thread.is_alive():
            self._notice(
                f"server: the trackers did not finish writing within {CLOSE_GRACE:g}s; "
                "the job's metrics are still in metrics_summary.json"
            )

    def _failed(self, tracker: Tracker, step: str, exc: BaseException) -> None:
        log.warning("job %s: tracker %s failed to %s: %s", self.run.job_id, tracker.name, step, exc)
        text = (
            f"server: tracker {tracker.name} failed to {step} ({type(exc).__name__}: {str(exc)[:200]}) "
            "and was stopped; the job's metrics are still in metrics_summary.json"
        )
        self._loop.call_soon_threadsafe(self._notice, text)

    def _work(self) -> None:
        live: list[Tracker] = []
        for tracker in self._trackers:
            try:
                tracker.open(self.run)
                live.append(tracker)
            except Exception as exc:  # an import, a store, a server: none may fail the job
                self._failed(tracker, "start", exc)
        ending = False
        while not ending:
            batch: list[Point] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            ending = item is None
            for tracker in list(live):
                try:
                    if batch:
                        tracker.log(batch)
                except Exception as exc:
                    self._failed(tracker, "write", exc)
                    live.remove(tracker)
        for tracker in live:
            try:
                tracker.close()
            except Exception as exc:
                self._failed(tracker, "finish", exc)
