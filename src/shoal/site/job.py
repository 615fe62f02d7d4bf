"""One job at a site: fetch the app, run the training script in its own process group, relay tasks.

The script talks to us over an inherited socket (see ``shoal.fl.client``); its stdout and
stderr go to the job's ``log.txt``, which is uploaded to the server when the job ends.

The job is made of parts it owns (decisions/0049): its inputs (``shoal.site.job_inputs``: its
archive checked and unpacked, each task's model fetched and filtered), its logs
(``shoal.site.job_logs``: the script's output kept, streamed and uploaded), its results
(``shoal.site.job_results``: taken from the script, protected and delivered) and its metrics
(``shoal.site.job_metrics``: to the server, or kept on the site). What stays here is the job's
life, and the decisions the parts leave to it: its start (the site policy's checks, the
script's confinement and launch), the tasks handed to the script, the relay of what the script
says, a failure reported once, and its end (the script stopped, then its log, then the
confirmation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.privacy.protections import site_privacy
from shoal.sandbox.files import remove_tree
from shoal.site.job_inputs import InputHost, JobInputs
from shoal.site.job_logs import JobLogs, LogHost
from shoal.site.job_metrics import JobMetrics, MetricsHost
from shoal.site.job_results import JobResults, ResultHost
from shoal.site.job_ties import JobTies
from shoal.site.policy import PRIVACY_KEY
from shoal.wire.channel import MAX_MESSAGE_BYTES, UnreadableMessage, encode, read_message
from shoal.wire.jobdef import client_command
from shoal.wire.messages import SCRIPT, BadMessage, Dispatch
from shoal.wire.messages import encode as encode_message
from shoal.wire.models import SPARE_MODEL
from shoal.wire.results import ResultInfo
from shoal.wire.script import ScriptLogConfig, ScriptMetric, ScriptResult, ScriptTask, StopScript
from shoal.wire.site import (
    Ended,
    ErrorInfo,
    JobFailed,
    Ready,
    SiteNotice,
    TaskForSite,
)
from shoal.wire.status import brief

if TYPE_CHECKING:
    from shoal.runtime.launcher import ForkServer, JobProcess
    from shoal.sandbox.confinement import Sandbox

log = logging.getLogger("shoal.site")

STOP_GRACE = 3.0  # seconds the script gets to leave on its own after "stop"
#: Seconds to read what is left on a script's channel once it has exited and its group is killed.
CHANNEL_DRAIN_GRACE = 5.0
TERM_GRACE = 2.0  # then SIGTERM to its process group; then SIGKILL


class JobHost(LogHost, ResultHost, MetricsHost, InputHost, Protocol):
    """What a job at a site needs of the agent that runs it (``SiteAgent``), and nothing more:
    the job is given one, so it never reaches into the agent's own workings. It is what the
    job's parts need (the site's name, counters, control channel, downloads, uploads and
    inline results), plus what the job itself asks."""

    workspace: Path  # the site's workspace; the job's folder is jobs/<job_id> in it
    policy: dict[str, Any]  # the site's policy (site_policy.json)
    sandbox: Sandbox  # confines the job's script
    launcher: ForkServer  # starts it


class SiteJob:
    def __init__(self, agent: JobHost, job_id: str, app: str, study: str = "default") -> None:
        self.agent = agent
        self.job_id = job_id
        self.app = app
        self.study = study
        self.gpus: list[str] | None = None  # the GPU ids the server gave the job, if the site declares GPUs
        self.archive_sha256 = ""  # what the job's archive must hash to (the server's blob id)
        self.dir = agent.workspace / "jobs" / job_id
        self.proc: JobProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._started = asyncio.Event()
        self._ending = False
        self._ended = False
        self._pumping: asyncio.Task[None] | None = None  # relaying the script's messages (_pump)
        self._unanswered: set[str] = set()  # tasks handed to the script that it has not answered
        self._tasks_seen: set[str] = set()
        self._failed = False
        self._failure = ErrorInfo(type="Error", message="")  # what was reported when it failed, to say again
        # Its parts (decisions/0049): each keeps its own state; what it means for the job is the job's.
        self.logs = JobLogs(agent, job_id, self.dir)  # log.txt and log.json: the script's output
        ties = JobTies(job_id, failed=self._report_failure, note=self.logs.append)
        self.inputs = JobInputs(agent, ties, folder=self.dir, models=self.models_dir)  # archive, models
        self.results = JobResults(
            agent, ties, work=self.work_dir, kept=self.results_dir, models=self.models_dir
        )
        self.metrics = JobMetrics(agent, job_id, study, self.dir)  # what the script logs
        # What the script may say, and what the agent does with each (an unknown kind: one notice).
        self._from_script = Dispatch(
            SCRIPT,
            {ScriptResult: self._on_result, ScriptMetric: self.metrics.logged},
            log,
            f"job {job_id}: the training script",
        )

    @property
    def work_dir(self) -> Path:
        """The script's own folder: its working folder, HOME and TMPDIR, where it writes its
        results; the only one it may write (the agent takes files out of it, never follows
        paths into it: ``shoal.sandbox.files``)."""
        return self.dir / "work"

    @property
    def models_dir(self) -> Path:
        """The models of its tasks, written by the agent; the script may only read them."""
        return self.dir / "models"

    @property
    def results_dir(self) -> Path:
        """Results taken from the script on their way to the server (the agent's alone)."""
        return self.dir / "results"

    async def start(self) -> None:
        try:
            await self._start()
        except Exception as exc:
            log.exception("job %s could not start", self.job_id)
            await self._report_failure(type(exc).__name__, str(exc))
            self.logs.append(f"shoal site: could not start the job: {exc}")
        finally:
            self._started.set()

    async def _start(self) -> None:
        job_dir, app_dir = await self.inputs.unpack(self.app, self.archive_sha256)
        # What every result of this job must get before it leaves, fixed before the script runs.
        self.results.privacy = site_privacy(
            json.loads((job_dir / "meta.json").read_text()).get("privacy"), self.agent.policy.get(PRIVACY_KEY)
        )
        self.inputs.to_sites = dict((self.agent.policy.get(PRIVACY_KEY) or {}).get("to_sites") or {})
        served = self.agent.policy.get("studies")
        if served is not None and self.study not in served:
            raise PermissionError(f"site {self.agent.name} does not serve study '{self.study}' (site policy)")
        custom_code = self.agent.policy.get("allow_custom_code", True)
        # "module": "shoal...." runs built-in client code; "script" runs the job's custom code,
        # which a site may forbid (allow_custom_code: false in its site_policy.json).
        refusal = None if custom_code else f"site {self.agent.name} forbids custom code (site policy)"
        argv = client_command(app_dir, refuse_scripts=refusal)
        custom = [str(app_dir / "custom")] if custom_code else []
        if self.work_dir.exists():  # left by an earlier agent process that ran this job and died
            await asyncio.to_thread(remove_tree, self.work_dir)  # the script's: any depth, any links
        for folder in (self.work_dir, self.models_dir, self.results_dir):
            folder.mkdir(parents=True, exist_ok=True)
        env = {
            "SHOAL_SITE_NAME": self.agent.name,
            "SHOAL_JOB_ID": self.job_id,
            "SHOAL_APP_DIR": str(app_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(custom),
        }
        if self.gpus is not None:  # the site declares its GPUs: the script sees the ones it holds
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        # The script reads its job, its models and the site's declared data, writes only its
        # own folder, and may use the network unless the site's policy says allow_network: false.
        confinement = self.agent.sandbox.spec(
            read=[job_dir, self.models_dir, *map(Path, self.agent.policy.get("data_paths") or [])],
            write=[self.work_dir],
            home=self.work_dir,
            network=self.agent.policy.get("allow_network", True),
        )
        launch = self.agent.launcher.launch
        self.proc, parent = await launch(
            argv, cwd=str(self.work_dir), env=env, sys_path=custom, confinement=confinement
        )
        reader, self._writer = await asyncio.open_connection(sock=parent, limit=MAX_MESSAGE_BYTES)
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        self.logs.capture(self.proc.stdout, self._output_lost)
        self._pumping = loop.create_task(self._pump(reader))
        await self.agent.send(Ready(job_id=self.job_id))
        meta = json.loads((job_dir / "meta.json").read_text())
        if not self.agent.policy.get("share_metrics", True):
            await self.metrics.keep_here(str(meta.get("name", "")))
        # Logs stream unless the job says "log_streaming": false: people expect `job logs` to
        # show a running job (the README says logs stream). A site's policy may refuse.
        if meta.get("log_streaming", True) is not False:
            if self.agent.policy.get("allow_log_streaming", True):
                loop.create_task(self.logs.stream(lambda: self._ending))
            else:
                await self.agent.send(
                    SiteNotice(job_id=self.job_id, message="log streaming refused by site policy")
                )

    async def set_log_config(self, setting: str) -> None:
        await self._started.wait()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(encode_message(ScriptLogConfig(setting=setting))))
            await self._writer.drain()

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        """Relay the script's messages; when it exits before being told to stop, that's a failure.

        The script's end is its process's exit, not the end of its channel: a process it
        started holds the channel and its output pipe open for as long as it lives. So once
        the script has exited its process group is killed, and what is left on the channel is
        read (a result being uploaded is let finish) before the exit is reported."""
        relay = asyncio.get_running_loop().create_task(self._relay(reader))
        assert self.proc is not None
        code = await self.proc.wait()
        self._kill_group_of(self.proc)
        await self._drain(relay)
        await self._report_exit(code)

    async def _drain(self, relay: asyncio.Task[None]) -> None:
        """Let the relay read what the script wrote before it exited; a channel still held open
        CHANNEL_DRAIN_GRACE seconds later (a descendant that left the group) is given up on,
        but never in the middle of handing a result over."""
        deadline = time.monotonic() + CHANNEL_DRAIN_GRACE
        while not relay.done():
            await asyncio.wait({relay}, timeout=max(0.0, deadline - time.monotonic()))
            if relay.done():
                break
            if self.results.busy:
                deadline = time.monotonic() + CHANNEL_DRAIN_GRACE
                continue
            log.warning("job %s: the script's channel is still held open; closing it", self.job_id)
            relay.cancel()
            break

    async def _relay(self, reader: asyncio.StreamReader) -> None:
        """The script's messages, in order, until its channel ends."""
        try:
            while (raw := await read_message(reader)) is not None:
                try:
                    found = self._from_script.handler(raw)
                except BadMessage as exc:
                    # A script that bypasses the client API is held to its rules: a result it
                    # cannot describe fails the job (the server would refuse it), anything else
                    # is dropped with a notice.
                    if raw.get(SCRIPT.key) == ScriptResult.TYPE:
                        await self._report_failure("ResultRefused", f"INVALID_ARGS: {exc}")
                    else:
                        log.warning(
                            "job %s: the training script sent a malformed message: %s", self.job_id, exc
                        )
                    continue
                if found is not None:
                    message, handle = found
                    await handle(message)
        except ConnectionError as exc:
            log.warning("job %s: channel to the script broke: %s", self.job_id, exc)
        except UnreadableMessage as exc:
            await self._report_failure(
                "ChannelError", f"the training script sent an unreadable message on the shoal channel ({exc})"
            )
            self._kill_group_of(self.proc)  # nobody reads it any more: it would wait forever
        except Exception as exc:
            log.exception("job %s: relaying a result failed", self.job_id)
            await self._report_failure(type(exc).__name__, str(exc))

    async def _report_exit(self, code: int) -> None:
        """An exit nobody asked for is a failure: an error code, or a clean exit holding a task."""
        await self.logs.captured(2.0, stop=False)  # the script's last words, for the report below
        if not self._ending and code != 0:
            await self._report_failure(
                "ProcessExit", f"the training script exited with code {code}{self.logs.tail()}"
            )
        elif not self._ending and self._unanswered:
            # Exiting cleanly is fine between tasks (a script that loops a fixed number of
            # rounds); with a task in hand it would leave the round waiting forever.
            await self._report_failure(
                "ProcessExit",
                f"the training script exited (code 0) without answering its task{self.logs.tail()}",
            )

    async def _on_result(self, message: ScriptResult) -> None:
        if message.task_id not in self._tasks_seen:
            # Its own bug, not a late answer: the server would refuse it as one.
            await self._report_failure(
                "ProtocolError",
                f"the training script answered task {brief(message.task_id, 80)!r}, "
                "which it was not given (no such task for this site)",
            )
            return
        self._unanswered.discard(message.task_id)
        await self.results.take(message)

    async def deliver_result(self, task_id: str, path: Path, info: ResultInfo) -> None:
        """Send a result file to the server (``JobResults.deliver``; a light benchmark job
        delivers its own results through it)."""
        await self.results.deliver(task_id, path, info)

    async def fetch_model(self, task: TaskForSite, dest: Path) -> None:
        """The task's model into ``dest`` (``JobInputs.fetch_model``; a light benchmark job
        fetches its models through it)."""
        await self.inputs.fetch_model(task, dest)

    async def on_task(self, task: TaskForSite) -> None:
        await self._started.wait()
        task_id = task.task_id
        if self._ending or task_id in self._tasks_seen:
            return  # a task the server sent again after a reconnect, in case it was lost: had it
        self._tasks_seen.add(task_id)
        self.agent.counters.tasks_received += 1
        if self._failed:
            # The job failed here and said so, perhaps to a server that died and whose successor
            # resumed the job (decisions/0040): said again, so no round waits for this site.
            await self.agent.send(JobFailed(job_id=self.job_id, error=self._failure), keep=True)
            return
        if self._writer is None:
            return
        if self.proc is not None and self.proc.returncode is not None:
            # A crash is reported by _pump, with the script's last output; only a script that
            # ended cleanly before its work is reported here.
            if self.proc.returncode == 0:
                said = f"the training script had already exited when a task arrived{self.logs.tail()}"
                await self._report_failure("ProcessExit", said)
            return
        model_path = await self.inputs.model(task)
        if model_path is None:
            return
        self._unanswered.add(task_id)
        try:
            await self._hand_task(task, model_path)
        except ConnectionError:
            # The script is gone (its channel closed under the write): its exit, with its code
            # and last output, is what _pump reports; this write's error would only hide it.
            log.info("job %s: the script was gone when task %s arrived", self.job_id, task_id)

    async def _hand_task(self, task: TaskForSite, model_path: Path) -> None:
        assert self._writer is not None
        if task.round is not None:
            self.metrics.round = task.round
        privacy = self.results.masked(task.task_id) if "secagg" in task.meta else {}
        to_script = ScriptTask(
            task_id=task.task_id,
            task_name=task.task_name,
            round=task.round,
            total_rounds=task.total_rounds,
            meta=task.meta,
            model_path=str(model_path),
            result_dir=str(self.work_dir),
            privacy=privacy,
        )
        self._writer.write(encode(encode_message(to_script)))
        await self._writer.drain()

    async def _output_lost(self, exc: OSError) -> None:
        """The disk refused the script's output: the job cannot keep it, so it fails now, saying
        why, rather than hanging on a script blocked on a pipe nobody reads."""
        await self._report_failure(type(exc).__name__, f"cannot keep the script's output: {exc}")
        self._kill_group_of(self.proc)

    async def _report_failure(self, kind: str, message: str) -> None:
        if self._failed or self._ending:
            return
        self._failed = True
        self._failure = ErrorInfo(type=kind, message=brief(message))
        await self.agent.send(JobFailed(job_id=self.job_id, error=self._failure), keep=True)

    async def end(self, reason: str, kill: bool = False) -> None:
        """Stop the script (politely unless ``kill``, then by signal), upload its log, confirm."""
        if self._ended:
            return
        self._ending = True
        await self._started.wait()
        if not kill and self._writer is not None and not self._writer.is_closing():
            try:
                self._writer.write(encode(encode_message(StopScript(reason=reason))))
                await self._writer.drain()
            except ConnectionError:
                pass
        await self.stop_process(polite=not kill)
        if self._pumping is not None and not kill:
            # What the script sent before it exited (a metric logged after its last result)
            # reaches the server before the end is confirmed: the workflow's summary waits for
            # the confirmation (decisions/0053). Bounded: a late result still uploading is not
            # waited for, and an abort waits for nothing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pumping), CHANNEL_DRAIN_GRACE)
        self._ended = True
        # the script writes no more results: the spare of its last one (decisions/0054) goes
        (self.work_dir / SPARE_MODEL).unlink(missing_ok=True)
        await self.metrics.close()  # what the script logged is on disk before the end is confirmed
        await self.logs.captured(5.0, stop=True)  # the output written before the exit
        await self.logs.upload()  # whatever it manages, the end is confirmed below
        await self.agent.send(Ended(job_id=self.job_id), keep=True)

    async def stop_process(self, polite: bool = False) -> None:
        """Wait for the script to leave (if ``polite``), then SIGTERM, then SIGKILL its group."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            self._kill_group_of(proc)
            return
        steps = ((None, STOP_GRACE),) if polite else ()
        for sig, grace in (*steps, (signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
            if sig is not None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    return
            try:
                await asyncio.wait_for(proc.wait(), grace)
                break
            except TimeoutError:
                continue
        self._kill_group_of(proc)

    @staticmethod
    def _kill_group_of(proc: JobProcess | None) -> None:
        """Children the script forked share its group; none may outlive the job."""
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
