"""What a job run counts as it goes: tasks sent, models served, results taken, the metrics sites
log and the workflow's rounds, into the job's live ``Progress``, the server's totals and the
job's experiment trackers; a diverging global loss becomes a notice.

Owned by ``shoal.scheduler.runner.JobRun`` (its ``counts``), which relays what it counts to the
workflow and the sites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from shoal.scheduler.controller_messages import round_metrics
from shoal.scheduler.progress import Progress
from shoal.wire.channel import METRIC_KEY_MAX
from shoal.wire.controller import PrivacySpent, RoundDone
from shoal.wire.divergence import LossWatch
from shoal.wire.results import ResultInfo

if TYPE_CHECKING:
    from shoal.scheduler.totals import ServerTotals
    from shoal.scheduler.tracking import JobTracking

log = logging.getLogger("shoal.scheduler")


class CountsHost(Protocol):
    """What counting needs of the server (``RunHost`` has it)."""

    totals: ServerTotals  # the server's counters since start, which every run adds to

    def notify(self, job_id: int) -> None:
        """The job's live facts changed: wake whoever waits on them (wait, monitor)."""
        ...


class RunCounts:
    """One run's counting. ``tracking``: the job's trackers at the time (None: it names none);
    ``notice``: tells the job's users something (a diverging loss)."""

    def __init__(
        self,
        host: CountsHost,
        job_id: int,
        progress: Progress,
        tracking: Callable[[], JobTracking | None],
        notice: Callable[[str], None],
    ) -> None:
        self._host = host
        self._job_id = job_id
        self._progress = progress
        self._tracking = tracking
        self._notice = notice
        self._loss_watch = LossWatch()  # a diverging global loss becomes a notice

    def task_sent(self, site: str) -> None:
        self._progress.tasks_sent += 1
        self._host.totals.tasks_sent += 1
        self._progress.count(site, "tasks")

    def model_served(self, site: str, size: int) -> None:
        self._progress.bytes_to_sites += size
        self._host.totals.bytes_to_sites += size
        self._progress.count(site, "bytes_to_site", size)

    def result_taken(self, site: str, size: int, info: ResultInfo) -> None:
        """A result of ``size`` bytes taken from ``site``: counted, and its metrics kept."""
        progress = self._progress
        progress.site_status[site] = "running"
        progress.results_received += 1
        progress.bytes_from_sites += size
        self._host.totals.results_received += 1
        self._host.totals.bytes_from_sites += size
        progress.count(site, "results")
        progress.count(site, "bytes_from_site", size)
        for key, value in info.metrics.items():
            progress.put_site_metric(site, str(key), value)

    def site_metric(self, site: str, key: str, value: float, step: int | None) -> bool:
        """A metric a training script logged with ``flare.log_metric``, kept live per site and
        tracked; whether it goes on to the workflow. One the client API would not have sent (a
        script that writes the channel itself) is dropped, and so is one past the site's cap."""
        if not 0 < len(key) <= METRIC_KEY_MAX or not (step is None or type(step) is int):
            log.warning("job %s: %s sent a metric with a bad key or step; dropped", self._job_id, site)
            return False
        progress = self._progress
        if not progress.put_site_metric(site, key, value):  # past the site's cap: a notice said so
            self._host.notify(self._job_id)
            return False
        if step is not None:
            progress.site_metrics[site][f"{key}_step"] = step
        progress.add_point(key, site, progress.current_round or 0, value)
        self._host.totals.metrics_logged += 1
        tracking = self._tracking()
        if tracking is not None and isinstance(value, int | float) and not isinstance(value, bool):
            tracking.log(f"{site}/{key}", value, progress.current_round or 0)
        return True

    def round_done(self, message: RoundDone) -> None:
        """The workflow's round ended, with its global metrics."""
        progress = self._progress
        progress.last_metrics = round_metrics(message)
        progress.last_metrics_round = message.round  # the workflow's word
        for key, value in progress.last_metrics.items():
            progress.add_point(key, None, progress.last_metrics_round or 0, value)
        progress.rounds_done += 1
        self._host.totals.rounds_done += 1
        tracking = self._tracking()
        if tracking is not None:
            for key, value in progress.last_metrics.items():
                tracking.log(f"global/{key}", value, progress.last_metrics_round or 0)
        for text in self._loss_watch.feed(progress.last_metrics_round, progress.last_metrics):
            self._notice(text)
        self._host.notify(self._job_id)

    def privacy_spent(self, message: PrivacySpent) -> None:
        self._progress.record_privacy(message.spent)
        self._host.notify(self._job_id)
