"""The site agent: dials out to the server, holds the control channel, runs the site's jobs.

Sites sit behind firewalls, so the server never dials a site: the agent keeps one WebSocket
open (reconnecting with capped, jittered backoff) and the server pushes work down it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from shoal import __version__
from shoal.api.config_file import shoal_home
from shoal.api.http import Response
from shoal.errors import ShoalError
from shoal.runtime.launcher import ForkServer
from shoal.sandbox.confinement import Sandbox
from shoal.security.kitfiles import KIT_HINT
from shoal.security.tls import client_ssl_context, read_kit_json
from shoal.site.bulk import BROKEN, BulkLink, json_answer, raise_if_task_closed
from shoal.site.job import SiteJob
from shoal.site.metrics import SiteCounters, load_metrics_config
from shoal.site.policy import load_site_policy, load_site_resources
from shoal.wire import logconfig, routes
from shoal.wire.channel import CLOSE_MALFORMED, CLOSE_REPLACED
from shoal.wire.idle import Progress, TransferStalled, idle_timeout, watched
from shoal.wire.messages import SITE, BadMessage, Dispatch, Message, encode
from shoal.wire.results import ResultInfo
from shoal.wire.site import (
    AbortJob,
    Deploy,
    Ended,
    EndJob,
    ErrorInfo,
    Hello,
    InlineResult,
    JobFailed,
    RestartAgent,
    ResultAck,
    ShutdownAgent,
    SiteLogConfig,
    TaskForSite,
    Welcome,
)
from shoal.wire.status import brief

log = logging.getLogger("shoal.site")

BACKOFF_START = 0.1
BACKOFF_MAX = 10.0
TRANSFER_ATTEMPTS = 12  # a transfer retries (resuming) through about a minute of lost link
INLINE_ACK_TIMEOUT = 10.0  # seconds for the server to confirm a result sent inline, else PUT
KEPT_MAX = 1000  # failure and end reports held for the next connection (each a few KB at most)
# What ends one transfer attempt and starts the next (resuming), rather than failing the job.
TRANSFER_BROKEN = (aiohttp.ClientError, *BROKEN, TransferStalled)


class SiteAgent:
    job_class: type[SiteJob] = SiteJob  # what runs a job here; a benchmark swaps in a light one
    warm_processes = True  # fork training processes from a warm server (a light job class starts none)

    def __init__(self, kit_dir: Path, workspace: Path | None = None) -> None:
        kind, config = read_kit_json(kit_dir)
        if kind != "site":
            raise ShoalError(
                "STARTUP_KIT_MISSING", f"{kit_dir} is a {kind} kit, not a site kit", hint=KIT_HINT
            )
        self.kit_dir = kit_dir
        self.name = str(config["name"])
        server = config["server"]
        self.base_url = f"https://{server['host']}:{server['port']}"
        self._server = (str(server["host"]), int(server["port"]))
        self.workspace = workspace or kit_dir / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.policy: dict[str, Any] = load_site_policy(kit_dir)  # refuses to start on a bad one
        self.exit_action: str | None = None  # "restart" or "shutdown" when the server asked for it
        self.resources: dict[str, Any] = load_site_resources(kit_dir)  # the same
        self.metrics_config = load_metrics_config(kit_dir)  # the same; None: no /metrics
        self.counters = SiteCounters()  # what /metrics shows (shoal.site.metrics)
        # Training scripts must not reach the kit (the site's key), the workspace (other jobs)
        # or an admin's ~/.shoal; refused here where SHOAL_SANDBOX=required cannot be had.
        self.sandbox = Sandbox([kit_dir, self.workspace, Path(shoal_home())])
        self.sandbox.check_readable(list(self.policy.get("data_paths") or []), "site policy data_paths")
        self.jobs: dict[str, SiteJob] = {}
        self._acks: dict[tuple[str, str], asyncio.Future[bool]] = {}  # inline results in flight
        # What the server may say, and what the agent does with each (an unknown kind: one notice).
        self._dispatch = Dispatch(
            SITE,
            {
                Welcome: self._on_welcome,
                Deploy: self._on_deploy,
                TaskForSite: self._on_task,
                SiteLogConfig: self._on_log_config,
                ResultAck: self._on_result_ack,
                RestartAgent: self._on_order,
                ShutdownAgent: self._on_order,
                EndJob: self._on_end,
                AbortJob: self._on_end,
            },
            log,
            "the server",
        )
        self._kept: list[Message] = []  # send(keep=True) while disconnected
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._bulk: BulkLink | None = None
        self._stop = asyncio.Event()
        # Training processes are forked from a process that has numpy and the client API
        # imported (shoal.runtime.launcher): a job's script starts without waiting for an interpreter.
        self.launcher = ForkServer(
            ("numpy", "shoal.fl.client", "shoal.fl", "shoal.sandbox.confinement"), pipe_stdout=True
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    @property
    def bulk(self) -> BulkLink:
        """Where models and results move (``shoal.site.bulk``), apart from the event loop."""
        assert self._bulk is not None
        return self._bulk

    async def send(self, message: Message, keep: bool = False) -> bool:
        """Report to the server. A message sent while disconnected is dropped (the server learns
        of the disconnect on its side and settles the job), unless ``keep``: it then goes first
        after the next hello. A site's failure or end must not be lost to a link that drops and
        comes back within the server's grace, or the job would wait for a round that will not
        come. False if it was not sent now."""
        if self._ws is not None and not self._ws.closed:
            try:
                await self._ws.send_json(encode(message))
                return True
            except ConnectionError:
                pass
        if keep and len(self._kept) < KEPT_MAX:
            log.info(
                "not connected: the %s report of job %s waits for the server",
                message.TYPE,
                getattr(message, "job_id", "-"),
            )
            self._kept.append(message)
        return False

    async def send_result_inline(self, job_id: str, task_id: str, data: bytes, info: ResultInfo) -> bool:
        """A small result (INLINE_BYTES) through the control channel; True once the server
        says it has it. False (not sent, refused, the channel dropped before the answer, or no
        answer in time): the caller sends it by PUT, which retries and reports errors."""
        key = (job_id, task_id)
        answer = self._acks[key] = asyncio.get_running_loop().create_future()
        try:
            encoded = base64.b64encode(data).decode("ascii")
            message = InlineResult(job_id=job_id, task_id=task_id, header=info.header(), data=encoded)
            if not await self.send(message):
                return False
            return await asyncio.wait_for(answer, INLINE_ACK_TIMEOUT)
        except (TimeoutError, ConnectionError):
            return False
        finally:
            self._acks.pop(key, None)

    async def download(self, path: str, dest: Path) -> None:
        """Stream a file from the server to ``dest``; a broken or stalled transfer resumes where
        it stopped (``Range``) instead of starting over, for as long as the link keeps coming
        back. Stalled means no byte for ``idle_timeout()`` seconds: never a wall-clock limit."""
        tmp = dest.with_name(dest.name + ".part")
        tmp.unlink(missing_ok=True)
        idle = idle_timeout()
        for attempt in range(TRANSFER_ATTEMPTS):
            progress = Progress()
            try:
                await watched(self._download_once(path, tmp, progress), progress, idle)
                tmp.replace(dest)
                return
            except TRANSFER_BROKEN as exc:
                log.warning("download of %s broke (%s); retrying", path, exc)
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_START * 2**attempt))
        raise RuntimeError(f"GET {path}: gave up after {TRANSFER_ATTEMPTS} attempts")

    async def _download_once(self, path: str, tmp: Path, progress: Progress) -> None:
        """One GET onto the end of ``tmp`` (``Range`` from what it holds), on a bulk connection."""
        have = tmp.stat().st_size if tmp.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}

        def take(resp: Response) -> None:  # in the transfer's thread
            if resp.status == 409:
                raise_if_task_closed(said := json_answer(resp))
                raise RuntimeError(f"GET {path}: HTTP 409: {said}")
            if resp.status not in (200, 206):
                text = resp.read()[:500].decode("utf-8", "replace")
                raise RuntimeError(f"GET {path}: HTTP {resp.status}: {text}")
            if have:
                log.info("resuming download of %s at byte %d (HTTP %d)", path, have, resp.status)
            with tmp.open("ab" if resp.status == 206 else "wb") as out:
                for piece in resp.iter_body():
                    out.write(piece)
                    progress.tick()

        await self.bulk.exchange("GET", path, headers, progress, take)

    async def upload(self, path: str, src: Path, headers: dict[str, str]) -> None:
        """PUT a file; a broken or stalled result upload resumes from the bytes the server says
        it holds."""
        offset = 0
        idle = idle_timeout()
        for attempt in range(TRANSFER_ATTEMPTS):
            progress = Progress()
            if offset:
                log.info("resuming upload to %s at byte %d of %d", path, offset, src.stat().st_size)
            try:
                held = await watched(self._upload_once(path, src, offset, headers, progress), progress, idle)
                if held is None:
                    return
                offset = held  # we and the server disagreed on what arrived: send from there
            except TRANSFER_BROKEN as exc:
                log.warning("upload to %s broke (%s); resuming", path, exc)
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_START * 2**attempt))
                offset = await self._received(path)
        raise RuntimeError(f"PUT {path}: gave up after {TRANSFER_ATTEMPTS} attempts")

    async def _upload_once(
        self, path: str, src: Path, offset: int, headers: dict[str, str], progress: Progress
    ) -> int | None:
        """One PUT from ``offset``: None once the server has it all, else the bytes it holds (409)."""
        size = src.stat().st_size
        query = f"{'&' if '?' in path else '?'}offset={offset}"
        send = {**headers, "X-Shoal-Total": str(size), "Content-Length": str(size - offset)}

        def take(resp: Response) -> int | None:  # in the transfer's thread
            if resp.status == 409:
                raise_if_task_closed(said := json_answer(resp))
                if not isinstance(said, dict) or "received" not in said:
                    raise RuntimeError(f"PUT {path}: HTTP 409: {said}")  # not about offsets: say so
                return int(said["received"])
            text = resp.read()[:500].decode("utf-8", "replace")
            if resp.status == 504:  # the server gave up waiting for our bytes first: resume
                raise TransferStalled(f"the server dropped the upload: {text}")
            if resp.status != 200:
                raise RuntimeError(f"PUT {path}: HTTP {resp.status}: {text}")
            return None

        with src.open("rb") as f:
            f.seek(offset)
            return await self.bulk.exchange("PUT", path + query, send, progress, take, body=f)

    async def _received(self, path: str) -> int:
        """Bytes of an interrupted upload the server holds (0 where it cannot say)."""
        try:
            async with self.session.get(self.base_url + path) as resp:
                if resp.status == 200:
                    return int((await resp.json()).get("received", 0))
        except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError):
            pass
        return 0

    async def run(self) -> None:
        metrics = None
        try:
            if self.metrics_config is not None:
                from shoal.site.metrics import serve

                metrics = await serve(
                    self.metrics_config, self.workspace, self.name, self.counters, self.jobs
                )
            await self._run()
        finally:
            if metrics is not None:
                await metrics.cleanup()
            await self.launcher.close()

    async def _run(self) -> None:
        log.log(logging.INFO if self.sandbox.abi >= 1 else logging.WARNING, "%s", self.sandbox.notice())
        if self.warm_processes:
            self.launcher.warm_up()
        context = client_ssl_context(self.kit_dir)
        connector = aiohttp.TCPConnector(ssl=context, limit=16)
        self._bulk = BulkLink(*self._server, context, idle_timeout())
        try:
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            ) as session:
                self._session = session
                backoff = BACKOFF_START
                while not self._stop.is_set():
                    try:
                        async with session.ws_connect(
                            self.base_url + routes.SITE_CHANNEL, heartbeat=15.0
                        ) as ws:
                            self._ws = ws
                            self.counters.connected = True
                            self.counters.connections += 1
                            hello = Hello(
                                version=__version__,
                                # What the server schedules by; the site's data paths stay here.
                                policy={k: v for k, v in self.policy.items() if k != "data_paths"},
                                resources=self.resources,
                                jobs=list(self.jobs),
                            )
                            await ws.send_json(encode(hello))
                            log.info("connected to %s", self.base_url)
                            while self._kept:  # sent before anything else; kept until it went
                                await ws.send_json(encode(self._kept[0]))
                                self._kept.pop(0)
                            backoff = BACKOFF_START
                            closed_with = await self._listen(ws)
                            if closed_with == CLOSE_REPLACED:
                                log.warning(
                                    "another agent with this site's kit connected; retrying in a while"
                                )
                                backoff = BACKOFF_MAX
                            elif closed_with == CLOSE_MALFORMED:
                                log.error(
                                    "the server refused this agent's hello (see its log); retrying in a while"
                                )
                                backoff = BACKOFF_MAX
                    except aiohttp.ClientConnectorCertificateError as exc:
                        # not a network blip: the server (or something posing as it) presents a
                        # certificate this kit does not trust for the host it dials; said loudly,
                        # and retried only because a server being re-provisioned looks the same
                        log.error(
                            "refusing the server at %s: %s; run 'shoal preflight --startup-kit %s'",
                            self.base_url,
                            exc.certificate_error,
                            self.kit_dir,
                        )
                    except aiohttp.WSServerHandshakeError as exc:
                        if exc.status not in (401, 403):
                            log.info("cannot reach the server (%s); retrying in %.1fs", exc, backoff)
                        else:  # the server knows this certificate and says no: revoked or replaced
                            log.error(
                                "the server refuses this site's certificate (HTTP %s): it was revoked or "
                                "replaced by a renewed kit; ask the project admin for the current kit",
                                exc.status,
                            )
                    except (aiohttp.ClientError, OSError) as exc:
                        log.info("cannot reach the server (%s); retrying in %.1fs", exc, backoff)
                    finally:
                        self._ws = None
                        self.counters.connected = False
                        for answer in self._acks.values():  # their answers went with the channel
                            if not answer.done():
                                answer.set_exception(ConnectionError("control channel closed"))
                    if self._stop.is_set():
                        break
                    try:
                        await asyncio.wait_for(self._stop.wait(), backoff * (0.5 + random.random()))
                    except TimeoutError:
                        pass
                    backoff = min(backoff * 2, BACKOFF_MAX)
                await self._end_all("the site agent is stopping")
        finally:
            self._bulk.close()  # its threads must not hold the agent's exit

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse) -> int | None:
        """Dispatch the server's messages until the channel ends; the close code the server
        gave, if it closed it (read from its close frame: aiohttp's ``close_code`` is rewritten
        by its own closing reply)."""
        stop_task = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({receive, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                if stop_task in done:
                    receive.cancel()
                    return None
                msg = receive.result()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return int(msg.data)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return None
                try:
                    found = self._dispatch.handler(json.loads(msg.data))
                except BadMessage as exc:
                    log.warning("the server sent a malformed message; ignored: %s", exc)
                    continue
                if found is not None:
                    message, handle = found
                    handle(message)
        finally:
            stop_task.cancel()

    def _on_deploy(self, message: Deploy) -> None:
        if message.job_id in self.jobs:
            return  # deployed again after a reconnect: it runs already
        self.counters.jobs_started += 1
        job = self.jobs[message.job_id] = self.job_class(self, message.job_id, message.app, message.study)
        if message.gpus is not None:
            job.gpus = list(message.gpus)
        if message.archive_sha256 is not None:
            job.archive_sha256 = message.archive_sha256
        asyncio.get_running_loop().create_task(job.start())

    def _on_task(self, message: TaskForSite) -> None:
        job = self.jobs.get(message.job_id)
        if job is not None:
            asyncio.get_running_loop().create_task(self._guard(job, job.on_task(message)))

    def _on_log_config(self, message: SiteLogConfig) -> None:
        job = self.jobs.get(message.job_id)
        if job is not None:
            asyncio.get_running_loop().create_task(self._guard(job, job.set_log_config(message.setting)))

    def _on_result_ack(self, message: ResultAck) -> None:
        answer = self._acks.get((message.job_id, message.task_id))
        if answer is not None and not answer.done():
            answer.set_result(message.ok)

    def _on_order(self, message: RestartAgent | ShutdownAgent) -> None:
        # only the server can say this: it arrives on the channel whose TLS verified it
        log.warning("the server asks this agent to %s (%s)", message.TYPE, message.reason)
        self.exit_action = message.TYPE
        self.stop()

    def _on_end(self, message: EndJob | AbortJob) -> None:
        loop = asyncio.get_running_loop()
        job = self.jobs.pop(message.job_id, None)
        if job is not None:
            loop.create_task(job.end(message.reason, kill=isinstance(message, AbortJob)))
        else:
            loop.create_task(self.send(Ended(job_id=message.job_id)))

    def _on_welcome(self, message: Welcome) -> None:
        log.debug("the server of project %r took this agent's hello", message.project)

    async def _guard(self, job: SiteJob, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:
            log.exception("job %s: task failed", job.job_id)
            error = ErrorInfo(type=type(exc).__name__, message=brief(str(exc)))
            await self.send(JobFailed(job_id=job.job_id, error=error), keep=True)

    async def _end_all(self, reason: str) -> None:
        jobs = list(self.jobs.values())
        self.jobs.clear()
        await asyncio.gather(*(job.stop_process() for job in jobs), return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()


def run_site(kit_dir: Path, workspace: Path | None = None) -> int:
    logconfig.setup()

    async def main() -> str | None:
        agent = SiteAgent(kit_dir, workspace)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()
        return agent.exit_action

    if asyncio.run(main()) == "restart":
        # the same command again, in this process (a service manager sees no exit): it reads
        # its kit, policy and resources afresh, so a restart also applies edits to them
        log.warning("restarting")
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "shoal", *sys.argv[1:]])
    return 0
