"""One running job: its controller process, its sites, and how it ends.

The controller (the workflow) runs in its own process group and speaks JSON lines over a
socketpair. This object relays its tasks to the sites over their open channels, hands site
results back to it, and settles the job to exactly one terminal status with a reason.

What it does is said here; each part's workings are a small object the run owns, in a module of
its own: the workflow's process (``workflow_process``) and the lines to it
(``controller_channel``), the tasks sent (``run_tasks``), where each site stands
(``run_sites``), what the run counts (``run_counts``), its checkpoints (``run_checkpoints``), and
how it ends (``run_end``: its outcome, an abort, the sites told to end, its files kept by
``run_outputs``, its status written; or the run forgotten when another replica took the job).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.privacy.central import read_job_privacy
from shoal.sandbox.files import remove_tree
from shoal.scheduler.controller_channel import ControllerChannel
from shoal.scheduler.controller_messages import BadControllerMessage, checked_task, error_message
from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.progress import Progress
from shoal.scheduler.run_checkpoints import KeeperHost, RunCheckpoints
from shoal.scheduler.run_counts import CountsHost, RunCounts
from shoal.scheduler.run_end import EndHost, RunEnd
from shoal.scheduler.run_sites import SiteMembership
from shoal.scheduler.run_tasks import TaskBook, TaskState
from shoal.scheduler.tracking import JobTracking, RunInfo, make_trackers, tracker_names
from shoal.scheduler.workflow_process import WorkflowProcess, controller_argv
from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease
from shoal.wire.controller import (
    Done,
    Finishing,
    PrivacySpent,
    Release,
    Result,
    ResultBytes,
    Resumable,
    RoundCheckpoint,
    RoundDone,
    SiteFailed,
    SiteJoined,
    SiteMetric,
    SitesEnded,
    Task,
    TaskClosed,
    WorkflowError,
    WorkflowLogConfig,
)
from shoal.wire.messages import CONTROLLER, Dispatch
from shoal.wire.models import INLINE_BYTES
from shoal.wire.results import ResultInfo
from shoal.wire.site import Deploy, SiteLogConfig, TaskForSite
from shoal.wire.status import JobStatus, brief

if TYPE_CHECKING:
    from shoal.runtime.launcher import ForkServer
    from shoal.sandbox.confinement import Sandbox

#: ``JobPaths`` and ``TaskState`` live in ``jobpaths`` and ``run_tasks``; named here too, where
#: the server's routes have always found them.
__all__ = ["JobPaths", "JobRun", "RunHost", "TaskState"]

log = logging.getLogger("shoal.scheduler")


class RunHost(EndHost, CountsHost, KeeperHost, Protocol):
    """What a job run needs of the server around it (the Scheduler), and nothing more: the run
    is given one, so it never reaches back into the scheduler's own workings. Its parts' needs
    are theirs to say (``EndHost``, ``CountsHost``, ``KeeperHost``); the run's own are here."""

    launcher: ForkServer  # starts the workflow's process
    sandbox: Sandbox | None  # confines it (None: nothing)

    def controller_args(self, study: str) -> list[str]:
        """The server's own arguments for a study's workflow process (update checks, custom code)."""
        ...

    def record_first_error_soon(self, job_id: int, error: dict[str, Any], fence: Lease | None = None) -> None:
        """``record_first_error`` from code that cannot await, in order with the other writes."""
        ...

    async def set_reason(self, job_id: int, reason: str, fence: Lease | None = None) -> None:
        """Say why the job is where it is without moving it (a resumed job: "running: resumed ...")."""
        ...

    def run_finished(self, run: JobRun) -> None:
        """The run has settled its job: the server may release what it held and dispatch."""
        ...


class JobRun:
    def __init__(
        self,
        host: RunHost,
        job_id: int,
        paths: JobPaths,
        server_app: str,
        site_apps: dict[str, str],
        min_clients: int,
        study: str = "default",
    ) -> None:
        self.host = host
        self.study = study
        self.job_id = job_id
        #: The SHA-256 of the job's stored archive (its blob id), which a site checks what it
        #: downloads against: a bucket (or anything on the way) that altered it is caught.
        self.archive_sha256 = ""
        self._to_sites: dict[str, Any] | None = None  # read from meta.json at the first task
        # What the workflow may send, and what the server does with each (an unknown kind is
        # logged once per job: a workflow's flood of them must not fill the server's log).
        self._dispatch = Dispatch(
            CONTROLLER,
            {
                Task: self._on_task,
                RoundDone: self._on_round,
                PrivacySpent: self._on_privacy,
                TaskClosed: self._on_task_closed,
                Release: self._on_release,
                Finishing: self._on_finishing,
                Done: self._on_done,
                WorkflowError: self._on_error,
                Resumable: self._on_resumable,
                RoundCheckpoint: self._on_checkpoint,
            },
            log,
            f"job {job_id}: the workflow",
        )
        self.paths = paths
        self.server_app = server_app
        self.site_apps = site_apps  # site name -> app folder it runs
        self.gpus: dict[str, list[str]] = {}  # site name -> the GPU ids the job holds there
        self.min_clients = min_clients
        self.task_book = TaskBook(paths)  # the tasks sent, each site's latest, their files
        self.tasks = self.task_book.tasks
        self.progress = Progress(site_status={s: "deploying" for s in site_apps})
        self.tracking: JobTracking | None = None  # the job's experiment trackers, if it names any
        #: What the run counts (tasks, bytes, results, metrics, rounds) into its progress.
        self.counts = RunCounts(host, job_id, self.progress, lambda: self.tracking, self.notice)
        self.channel = ControllerChannel(lambda: self.end.outcome is not None)  # lines to the workflow
        self.workflow = WorkflowProcess(job_id)  # its process: started, read until it exits
        self.members = SiteMembership(site_apps)  # each site failed, gone, confirmed the end?
        #: The job's checkpoints (decisions/0040): its row as stored (``checkpoint``), the
        #: rounds' models being stored. ``resume_from`` is the row a job resumed after a server
        #: restart starts from, ``attached`` the sites whose agents still run its training
        #: script (they are not deployed to again: the script goes on).
        self.round_checkpoints = RunCheckpoints(
            host,
            job_id,
            paths,
            Checkpoint(job_id=job_id, sites=dict(site_apps), min_clients=min_clients),
            fence=lambda: self.lease,
            notice=self.notice,
        )
        self.resume_from: Checkpoint | None = None
        #: What the resumed run came back from, as its reason says ("the server restarted",
        #: "replica X stopped").
        self.resume_event = "the server restarted"
        self.attached: set[str] = set()
        #: This server replica's lease on the job (decisions/0041): every write about the job
        #: is fenced by it.
        self.lease: Lease | None = None
        #: Its outcome, its abort, its sites told to end, its status written; or, the job taken
        #: over by another replica, the run forgotten without writing anything.
        self.end = RunEnd(
            host,
            job_id,
            paths,
            site_apps,
            self.members,
            self.workflow,
            self.round_checkpoints,
            fence=lambda: self.lease,
            tracking=lambda: self.tracking,
            notice=self.notice,
        )

    @property
    def sites(self) -> list[str]:
        return sorted(self.site_apps)

    @property
    def checkpoint(self) -> Checkpoint:
        """The job's checkpoint row as stored (``round_checkpoints`` keeps it)."""
        return self.round_checkpoints.row

    @checkpoint.setter
    def checkpoint(self, row: Checkpoint) -> None:
        self.round_checkpoints.row = row

    def to_sites(self) -> dict[str, Any]:
        """The job's ``privacy.to_sites`` (checked at submit): filters on every task's model."""
        if self._to_sites is None:
            self._to_sites = read_job_privacy(self.paths.job / self.server_app).get("to_sites") or {}
        return self._to_sites

    def start_tracking(self, job_name: str, meta: dict[str, Any], server_workspace: Path) -> None:
        """Start the trackers the job's meta.json names (shoal.scheduler.tracking)."""
        try:
            names = tracker_names(meta)
        except ValueError as exc:  # a job stored before 'trackers' was checked at submit
            self.notice(f"server: no experiment tracking: {exc}")
            return
        if names:
            trackers = make_trackers(names, self.paths.workspace, server_workspace)
            self.tracking = JobTracking(RunInfo(self.job_id, job_name, self.study), trackers, self.notice)

    async def start(self) -> None:
        """Start the controller and deploy to every site; the job is RUNNING when this returns."""
        p = self.paths
        resuming = self.resume_from
        if resuming is not None:  # what the dead server left in flight is not the new run's
            for folder in (p.run, p.models, p.results, p.resume):
                await asyncio.to_thread(remove_tree, folder)
        for d in (p.run, p.out, p.models, p.results, p.workspace / "server"):
            d.mkdir(parents=True, exist_ok=True)
        argv = controller_argv(
            self.job_id,
            p,
            self.server_app,
            self.sites,
            self.min_clients,
            self.host.controller_args(self.study),
        )
        if resuming is not None and resuming.last_round is not None:
            await self.host.checkpoints.write_resume_dir(resuming, p.resume)
            argv += ["--resume-dir", str(p.resume)]
        if resuming is not None:
            # the sites it runs on now (all of them, or those back in time), one more restart
            self.checkpoint = replace(resuming, sites=dict(self.site_apps), restarts=resuming.restarts + 1)
        await self.round_checkpoints.put()
        reader, self.channel.writer = await self.workflow.launch(
            self.host.launcher, self.host.sandbox, argv, p
        )
        for site, app in self.site_apps.items():
            if site in self.attached:  # its agent still runs the job: its next task goes to it
                self.progress.site_status[site] = "running"
                continue
            ok = await self.host.send_to_site(site, self._deploy_message(site, app))
            if not ok:
                self.site_failed(
                    site, {"type": "SiteDisconnected", "message": "site disconnected before deploy"}
                )
        if resuming is None:
            await self.host.set_status(self.job_id, JobStatus.RUNNING, "running", self.lease)
        else:
            after = (
                "before its first round ended"
                if resuming.last_round is None
                else f"after round {resuming.last_round}"
            )
            said = f"running: resumed {after} when {self.resume_event} (restart {self.checkpoint.restarts})"
            await self.host.set_reason(self.job_id, said, self.lease)
            self.notice(f"server: {said}")
            log.warning("job %s: %s", self.job_id, said)
        asyncio.get_running_loop().create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        """Relay the controller's messages until it exits (``WorkflowProcess.read_until_exit``),
        then settle the job."""
        returncode = await self.workflow.read_until_exit(reader, self._handle, self._workflow_broke)
        if self.end.outcome is None:
            self.end.outcome = (
                JobStatus.FINISHED_EXCEPTION,
                f"the workflow process exited with code {returncode} without finishing",
                {"site": "server", "type": "ProcessExit", "message": f"exit code {returncode}"},
            )
        self.channel.close()
        if await self.end.finish():
            self.host.run_finished(self)

    def _workflow_broke(self, reason: str) -> None:
        """The workflow's channel can no longer be trusted: the job ends with why, and the
        workflow is killed (unread, it would block on its next message and never exit)."""
        if self.end.outcome is None:
            error = {"site": "server", "type": "ChannelError", "message": reason}
            self.end.outcome = (JobStatus.FINISHED_EXCEPTION, reason, error)
        self.kill()

    async def _handle(self, raw: dict[str, Any]) -> None:
        """One message of the workflow. Its process runs the job's code, so a message is
        checked like a site's (``shoal.wire.controller`` types it, ``controller_messages``
        checks it; BadMessage is a ValueError, which ends the job) and any file it names is
        taken out of the workflow's folder, never followed there (``shoal.sandbox.files``)."""
        found = self._dispatch.handler(raw)
        if found is not None:
            message, handle = found
            await handle(message)

    async def _on_task(self, message: Task) -> None:
        if self.end.training_done:  # its sites are ending: a broken (or hostile) workflow
            raise BadControllerMessage("a task after the workflow said its training was over")
        checked = checked_task(message, set(self.site_apps))
        checkpointed = (  # the model the workflow checkpointed just before: the server holds its file
            None if checked.checkpoint_round is None else self.round_checkpoints.checkpointed_model(checked)
        )
        task = await self.task_book.take(checked, checkpointed, self.to_sites)
        self.progress.current_round = checked.round
        self.progress.total_rounds = checked.total_rounds
        size = task.model_bytes
        # Small: the model rides along (base64); no download request.
        inline = (
            base64.b64encode(task.model_path.read_bytes()).decode("ascii") if size <= INLINE_BYTES else None
        )
        out = TaskForSite(
            job_id=str(self.job_id),
            task_id=task.task_id,
            task_name=checked.task_name,
            round=checked.round,
            total_rounds=checked.total_rounds,
            meta=checked.meta,
            model=inline,
        )
        for site in sorted(task.sites):
            self.task_book.sending(site, task, out)
            if await self.host.send_to_site(site, out):
                self.counts.task_sent(site)
                if inline is not None:
                    self.model_served(site, size)
            else:
                self.site_lost(site, "site is not connected")
        self.host.notify(self.job_id)

    async def _on_round(self, message: RoundDone) -> None:
        self.counts.round_done(message)

    async def _on_privacy(self, message: PrivacySpent) -> None:
        self.counts.privacy_spent(message)

    async def _on_task_closed(self, message: TaskClosed) -> None:
        closing = self.tasks.get(message.task_id)
        if closing is not None:
            self.close_task(closing)

    async def _on_release(self, message: Release) -> None:
        self.task_book.release_result(
            message.task_id, message.site, message.site in self.site_apps, self.members.failed
        )

    async def _on_finishing(self, message: Finishing) -> None:
        """The sites end now and the workflow hears when they did (``RunEnd.training_over``)."""
        answer = self.channel.send
        self.end.training_over(lambda stragglers: answer(SitesEnded(stragglers=stragglers)))

    async def _on_done(self, message: Done) -> None:
        reason = message.reason
        said = f"finished: {brief(reason)}" if reason else "finished"
        self.end.outcome = (JobStatus.FINISHED_OK, said, None)
        self.channel.release()
        await self.end.tell_sites_finished()

    async def _on_error(self, message: WorkflowError) -> None:
        status, error = error_message(message, set(self.site_apps))
        self.end.outcome = (status, f"{error['type']}: {error['message']}", error)
        self.channel.release()

    async def _on_checkpoint(self, message: RoundCheckpoint) -> None:
        await self.round_checkpoints.take(message)

    async def _on_resumable(self, message: Resumable) -> None:
        self.checkpoint = replace(self.checkpoint, resumable=message.value, workflow=message.workflow[:128])
        await self.round_checkpoints.put()

    def task_for(self, site: str, task_id: str) -> TaskState | None:
        """The task ``task_id`` (as a site sent it) if it was sent to ``site`` and is not closed:
        its model may be fetched."""
        return self.task_book.task_for(site, task_id)

    def open_task(self, site: str, task_id: str) -> TaskState | None:
        """The task ``task_id`` if ``site`` may answer it now: sent to that site, the latest it
        was sent, not answered by it, not closed, and the job not ending. Anything else is a
        late, repeated or foreign result, which is refused (TASK_NOT_OPEN)."""
        if self.end.ending:
            return None
        return self.task_book.open_task(site, task_id)

    def partial_path(self, task: TaskState, site: str, kind: str = "part") -> Path:
        """Where ``site``'s upload for ``task`` gathers (``TaskBook.partial_path``)."""
        return self.task_book.partial_path(task, site, kind)

    def result_path(self, task_id: str, site: str) -> Path:
        """Where a site's checked result for a task waits for the workflow (a server-made name)."""
        return self.task_book.result_path(task_id, site)

    def close_task(self, task: TaskState) -> None:
        """The workflow is done with ``task`` (its round ended): see ``TaskBook.close_task``."""
        self.task_book.close_task(task)

    def on_result(self, site: str, task: TaskState, path: Path, info: ResultInfo) -> None:
        """A site's checked result (``site_routes.result_header``) for its open task: counted,
        and its path to the workflow, which says ``Release`` once it has folded it in."""
        self._count_result(site, task, path.stat().st_size, info)
        self.channel.send(Result(task_id=task.task_id, site=site, path=str(path), info=info))

    def takes_result_bytes(self, encoded_size: int) -> bool:
        """Whether a small result of ``encoded_size`` bytes (base64) may go to the workflow inside
        its message (``on_result_bytes``): only while the lines waiting for the workflow to read
        them stay under CONTROLLER_BACKLOG_BYTES, so a workflow that falls behind a round of many
        results cannot fill the server's memory; past that they go by file, as a large one does."""
        return self.channel.takes_bytes(encoded_size)

    def on_result_bytes(self, site: str, task: TaskState, data: str, size: int, info: ResultInfo) -> None:
        """A site's checked small result, its bytes (``data``, base64 as the site sent them, ``size``
        decoded) straight to the workflow (decisions/0044): no file is written, none to release."""
        self._count_result(site, task, size, info)
        self.channel.send(ResultBytes(task_id=task.task_id, site=site, data=data, info=info))
        self.task_book.drop_model_once_served(task, self.members.failed)

    def _count_result(self, site: str, task: TaskState, size: int, info: ResultInfo) -> None:
        """A result taken for ``task`` from ``site``: it has answered; counted and its metrics kept."""
        task.answered.add(site)
        self.task_book.drop_partial(task, site)  # an upload it gave up for the inline answer, say
        self.counts.result_taken(site, size, info)

    def model_served(self, site: str, size: int) -> None:
        self.counts.model_served(site, size)

    def site_metric(self, site: str, key: str, value: float, step: int | None) -> None:
        """A metric a training script logged with ``flare.log_metric``: kept live per site, and
        passed to the workflow, which records every one in metrics_summary.json. One the client
        API would not have sent (a script that writes the channel itself) is dropped
        (``RunCounts.site_metric``)."""
        if self.counts.site_metric(site, key, value, step):
            self.channel.send(SiteMetric(site=site, key=key, value=value, step=step))
            self.host.notify(self.job_id)

    def notice(self, text: str, site: str | None = None) -> None:
        """Something a user should see in the job's meta (a site refused log streaming, ...);
        ``site``: the site it comes from or is about, whose notices are capped (Progress)."""
        if self.progress.add_notice(text, site):
            self.host.notify(self.job_id)

    async def set_log_config(self, setting: str, sites: list[str], server: bool) -> dict[str, str]:
        """Push a log level or mode to the workflow and to the chosen sites, live."""
        applied: dict[str, str] = {}
        if server:
            self.channel.send(WorkflowLogConfig(setting=setting))
            applied["server"] = "sent"
        for site in sites:
            ok = await self.host.send_to_site(site, SiteLogConfig(job_id=str(self.job_id), setting=setting))
            applied[site] = "sent" if ok else "not connected"
        return applied

    def site_ready(self, site: str) -> None:
        self.progress.site_status[site] = "running"
        self.host.notify(self.job_id)

    def site_failed(self, site: str, error: dict[str, Any]) -> None:
        """A site's job process failed: tell the workflow, which decides if the job can go on."""
        if not self.members.fail(site):
            return
        self.progress.site_status[site] = "failed"
        message = str(error.get("message", "failed"))
        self.host.record_first_error_soon(
            self.job_id, {"site": site, "type": error.get("type", "Error"), "message": message}, self.lease
        )
        self.channel.send(SiteFailed(site=site, reason=message))

    def _deploy_message(self, site: str, app: str) -> Deploy:
        return Deploy(
            job_id=str(self.job_id),
            app=app,
            study=self.study,
            archive_sha256=self.archive_sha256 or None,  # the site checks the archive it fetches
            gpus=self.gpus.get(site),  # the site's GPU ids this job holds there
        )

    async def site_returned(self, site: str) -> None:
        """A site that disconnected mid-job is back. Within its grace it still runs the job: the
        task it has not answered goes again, since one sent as the link died is lost with it (the
        site ignores a task it already has). Past its grace: deploy again; it joins the next round."""
        if self.end.ending:
            return
        if not self.members.rejoin(site):
            unanswered = self.task_book.unanswered(site)
            if unanswered is not None:
                await self.host.send_to_site(site, unanswered)
            return
        self.progress.site_status[site] = "deploying"
        app = self.site_apps[site]
        if await self.host.send_to_site(site, self._deploy_message(site, app)):
            self.channel.send(SiteJoined(site=site))
            self.notice(f"{site} reconnected and rejoined the job", site)

    def site_lost(self, site: str, reason: str) -> None:
        self.members.lose(site)
        self.site_failed(site, {"type": "SiteDisconnected", "message": reason})
        self.members.check_settled()

    def site_ended(self, site: str) -> None:
        if self.progress.site_status.get(site) != "failed":
            self.progress.site_status[site] = "ended"
        self.members.confirm(site)

    def kill(self) -> None:
        """Stop the controller's whole process group (server shutdown, abort, a broken channel)."""
        self.workflow.kill_group()
