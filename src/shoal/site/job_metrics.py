"""A site job's logged metrics: to the server, or kept on the site.

What the training script logs (``flare.log_metric``, a ``ScriptMetric``) is counted in the
site's own /metrics and sent to the server (``LoggedMetric``: live in ``stats`` and
``monitor``), unless the site's policy says ``share_metrics: false``: then it goes to
TensorBoard event files in the job's folder on the site, the round of the latest task as the
step, and never leaves.

A part the job (``shoal.site.job.SiteJob``) owns, as decisions/0049 describes; it sees the
agent through ``MetricsHost`` only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shoal.wire.channel import METRIC_KEY_MAX
from shoal.wire.messages import Message
from shoal.wire.script import ScriptMetric
from shoal.wire.site import LoggedMetric, SiteNotice

if TYPE_CHECKING:
    from shoal.scheduler.tracking import JobTracking
    from shoal.site.metrics import SiteCounters


class MetricsHost(Protocol):
    """What a job's metrics need of the site agent: its counters and its control channel."""

    counters: SiteCounters  # what the site's own /metrics shows

    async def send(self, message: Message, keep: bool = False) -> bool:
        """Report to the server on the control channel."""
        ...


class JobMetrics:
    """The metrics of one job at a site (its folder ``folder``, of study ``study``)."""

    def __init__(self, agent: MetricsHost, job_id: str, study: str, folder: Path) -> None:
        self.agent = agent
        self.job_id = job_id
        self.study = study
        self.folder = folder
        self.round = 0  # the round of the latest task (a step for metrics kept on the site)
        self._own_tracking: JobTracking | None = None  # share_metrics: false (site policy)

    async def keep_here(self, job_name: str) -> None:
        """The site's policy keeps its metrics: they go to TensorBoard event files in the job's
        folder on the site (``tensorboard/``, the round as the step), never to the server; the
        job's notices say so once."""
        from shoal.scheduler.tracking import JobTracking, RunInfo, TensorBoardTracker

        loop = asyncio.get_running_loop()

        def notice(text: str) -> None:
            message = SiteNotice(job_id=self.job_id, message=text.removeprefix("server: "))
            loop.create_task(self.agent.send(message))

        run = RunInfo(int(self.job_id) if self.job_id.isdecimal() else 0, job_name, self.study)
        self._own_tracking = JobTracking(run, [TensorBoardTracker(self.folder / "tensorboard")], notice)
        notice(
            "logged metrics stay on this site (site policy share_metrics: false), "
            "in its own TensorBoard files"
        )

    async def logged(self, message: ScriptMetric) -> None:
        """A metric the script logged."""
        self.agent.counters.metrics_logged += 1
        if self._own_tracking is not None:
            self._track_here(message)
        else:
            await self.agent.send(
                LoggedMetric(job_id=self.job_id, key=message.key, value=message.value, step=message.step)
            )

    def _track_here(self, message: ScriptMetric) -> None:
        key, value = message.key, message.value
        if not 0 < len(key) <= METRIC_KEY_MAX:
            return
        assert self._own_tracking is not None
        self._own_tracking.log(key, value, self.round)

    async def close(self) -> None:
        """What the script logged here is on disk (before the job's end is confirmed)."""
        if self._own_tracking is not None:
            await self._own_tracking.close()
