"""The process of a job's workflow (its controller) as the server runs it: started confined in its
own process group, its channel read until it exits, and that group killed, never too late.

Owned by ``shoal.scheduler.runner.JobRun`` (its ``workflow``), which handles each message read
and says what a broken channel means for the job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shoal.scheduler.jobpaths import JobPaths
from shoal.wire.channel import MAX_MESSAGE_BYTES, UnreadableMessage, read_message

if TYPE_CHECKING:
    from shoal.runtime.launcher import ForkServer, JobProcess
    from shoal.sandbox.confinement import Sandbox

log = logging.getLogger("shoal.scheduler")

#: Seconds to read what is left on the workflow's channel once its process group is killed.
CHANNEL_DRAIN_GRACE = 5.0


def controller_argv(
    job_id: int, paths: JobPaths, server_app: str, sites: list[str], min_clients: int, server_args: list[str]
) -> list[str]:
    """The workflow process's arguments (after the interpreter): the controller's entry point
    for the job, then the server's own (``RunHost.controller_args``)."""
    return [
        "-m",
        "shoal.runtime.controller",
        "--job-id",
        str(job_id),
        "--app-dir",
        str(paths.job / server_app),
        "--run-dir",
        str(paths.run),
        "--workspace",
        str(paths.out),
        "--sites",
        ",".join(sites),
        "--min-clients",
        str(min_clients),
        *server_args,
    ]


class WorkflowProcess:
    """One job's workflow process, once ``launch`` has started it."""

    def __init__(self, job_id: int) -> None:
        self._job_id = job_id
        self._proc: JobProcess | None = None
        self._group_killed = False

    @property
    def started(self) -> bool:
        return self._proc is not None

    async def launch(
        self, launcher: ForkServer, sandbox: Sandbox | None, argv: list[str], paths: JobPaths
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Start the workflow; its channel, to read and to write."""
        p = paths
        # The workflow reads its job, the results handed to it and the checkpoint it resumes
        # from, writes only its scratch and output folders, and opens no network connection:
        # it speaks to the server over its channel alone.
        confinement = (
            sandbox.spec(read=[p.job, p.results, p.resume], write=[p.run, p.out], home=p.run, network=False)
            if sandbox is not None
            else None
        )
        self._proc, parent = await launcher.launch(
            argv, cwd=str(p.run), env={}, output_file=str(p.server_log), confinement=confinement
        )
        return await asyncio.open_connection(sock=parent, limit=MAX_MESSAGE_BYTES)

    async def read_until_exit(
        self,
        reader: asyncio.StreamReader,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        broke: Callable[[str], None],
    ) -> int:
        """``handle`` the workflow's messages until it exits; its exit code.

        The job ends when the controller process exits, not at EOF on its channel: a child the
        workflow forked holds the channel open as long as it lives. So once the process is gone
        its whole group is killed, which ends such children and lets the last messages it wrote
        (already in the socket) be read up to EOF; a reader still waiting after that (a
        descendant that left the group) is given up on. ``broke``: the channel can no longer be
        trusted, and why."""
        assert self._proc is not None
        relay = asyncio.get_running_loop().create_task(self._relay(reader, handle, broke))
        returncode = await self._proc.wait()
        self.kill_group()
        try:
            await asyncio.wait_for(asyncio.shield(relay), CHANNEL_DRAIN_GRACE)
        except TimeoutError:
            log.warning("job %s: the workflow's channel is still held open; closing it", self._job_id)
            relay.cancel()
        except Exception:  # a bug in handling a message must not leave the job RUNNING
            log.exception("job %s: handling the workflow's messages failed", self._job_id)
        return returncode

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        broke: Callable[[str], None],
    ) -> None:
        """Handle the controller's messages in order until EOF."""
        try:
            while (message := await read_message(reader)) is not None:
                await handle(message)
        except ConnectionError as exc:
            log.warning("job %s: controller channel broke: %s", self._job_id, exc)
        except UnreadableMessage as exc:
            log.warning("job %s: unreadable message from the workflow process: %s", self._job_id, exc)
            broke(f"the workflow process sent an unreadable message ({exc})")
        except (ValueError, OSError) as exc:  # a message the server will not act on (see ``handle``)
            log.warning("job %s: refused a message of the workflow process: %s", self._job_id, exc)
            broke(f"the workflow process sent a message the server refused: {exc}")

    def kill_group(self) -> None:
        """SIGKILL the controller's process group: the controller and whatever it started. Done
        at the latest when the controller has exited, and never after: once its group is empty
        the group id may be reused by an unrelated process."""
        if self._proc is None or self._group_killed:
            return
        if self._proc.returncode is not None:
            self._group_killed = True  # this is the last kill: the group ends with it
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
