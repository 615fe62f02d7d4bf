"""Warm spares: a Python process started ahead of time, its heavy imports done, waiting for a job.

Starting a job's process (a site's training script, the server's job controller) costs an
interpreter start plus numpy and shoal imports: ~200 ms here, most of a one-round job. So the
site agent and the server each keep one spare: started with ``python -u -m shoal.wire.warm
MODULE...``, it imports those modules and blocks on its socketpair. A job takes the spare (one
JSON line: argv, working folder, environment, sys.path, optional log file) and the spare turns
into that process, by ``runpy``, exactly as ``python -u <argv>`` would run it; then the next
spare is started in the background. The same socket then carries the job's channel.

What stays the same as a fresh process: its own session and process group (abort and shutdown
kill the group), stdout/stderr where the parent wants them, ``SHOAL_CHANNEL_FD``, exit codes
(an uncaught exception exits 1 with its traceback, ``sys.exit`` as usual). A spare whose parent
dies sees EOF on its socket and exits, so none outlive their agent or server. Set
``SHOAL_WARM_SPARES=0`` to start every job process from scratch instead.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from shoal.wire.channel import CHANNEL_FD_ENV, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any

MAX_ASSIGNMENT = 1 << 20
REPLACE_DELAY = 1.0  # seconds between a job process's exit and starting the next spare


def enabled() -> bool:
    return os.environ.get("SHOAL_WARM_SPARES", "1") != "0"


class Spare:
    """A started spare: its process and the parent's end of its socketpair."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock


class SparePool:
    """One spare kept ready; ``launch`` hands it a job and starts the next in the background."""

    def __init__(self, preload: tuple[str, ...], *, pipe_stdout: bool) -> None:
        self.preload = preload
        self.pipe_stdout = pipe_stdout
        self._ready: asyncio.Task[Spare] | None = None
        self._replacing: set[asyncio.Task[None]] = set()

    def warm_up(self) -> None:
        """Start a spare now (call once the event loop runs) so the first job finds one."""
        import asyncio

        if enabled() and self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._spawn())

    async def launch(
        self,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        sys_path: list[str] | None = None,
        output_file: str | None = None,
    ) -> tuple[asyncio.subprocess.Process, socket.socket]:
        """Run ``python -u <argv>`` in a spare (``argv`` is ``["-m", module, ...]`` or
        ``[script, ...]``); returns the process and the parent's end of its channel. With spares
        off (``SHOAL_WARM_SPARES=0``) it starts a new interpreter with the same arguments."""
        import asyncio

        if not enabled():  # env's PYTHONPATH does what sys_path does for a spare
            return await self._start(argv, cwd=cwd, env=env, output_file=output_file)
        assignment = encode(
            {"argv": argv, "cwd": cwd, "env": env, "sys_path": sys_path or [], "output": output_file}
        )
        spare = await self._take()
        try:
            spare.sock.sendall(assignment)
        except OSError:  # the spare died while it waited (killed, out of memory): start afresh
            spare.sock.close()
            spare = await self._spawn()
            spare.sock.sendall(assignment)
        # The next spare starts a moment after this process is gone: started at once, its
        # imports would take the CPU from the job it was meant to speed up, or from the CLI
        # waiting on it (two cores: first rounds twice as long, `job wait` 100 ms late).
        task = asyncio.get_running_loop().create_task(self._replace_after(spare.proc))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)
        return spare.proc, spare.sock

    async def _replace_after(self, proc: asyncio.subprocess.Process) -> None:
        import asyncio

        await proc.wait()
        await asyncio.sleep(REPLACE_DELAY)
        self.warm_up()

    async def _take(self) -> Spare:
        ready, self._ready = self._ready, None
        if ready is not None:
            try:
                spare = await ready
                if spare.proc.returncode is None:
                    return spare
                spare.sock.close()
            except OSError:
                pass
        return await self._spawn()

    async def _spawn(self) -> Spare:
        proc, sock = await self._start(["-m", "shoal.wire.warm", *self.preload], cwd=None, env={})
        return Spare(proc, sock)

    async def _start(
        self, args: list[str], *, cwd: str | None, env: dict[str, str], output_file: str | None = None
    ) -> tuple[asyncio.subprocess.Process, socket.socket]:
        """``python -u <args>`` in its own session, one end of a socketpair as its channel, its
        output into ``output_file``, a pipe (``pipe_stdout``) or nowhere."""
        import asyncio

        parent, child = socket.socketpair()
        log = open(output_file, "ab") if output_file else None  # noqa: SIM115 - handed to the child
        if log is not None:
            stdout: Any = log
            stderr: Any = log
        elif self.pipe_stdout:
            stdout, stderr = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
        else:
            stdout = stderr = asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-u",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(child.fileno(),),
                env={**os.environ, **env, CHANNEL_FD_ENV: str(child.fileno()), "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
            if log is not None:
                log.close()
        return proc, parent

    async def close(self) -> None:
        """Let the waiting spare go (it exits when its socket closes); start no more."""
        for task in list(self._replacing):
            task.cancel()
        ready, self._ready = self._ready, None
        if ready is None:
            return
        try:
            spare = await ready
        except OSError:
            return
        spare.sock.close()
        try:
            await spare.proc.wait()
        except ProcessLookupError:
            pass


# --- the spare's side -------------------------------------------------------------------------


def _read_assignment(fd: int) -> dict[str, Any] | None:
    """One JSON line, read a byte at a time: whatever follows on the socket is the job's channel
    and must stay unread for the client API's own reader."""
    sock = socket.socket(fileno=fd)
    try:
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk or len(data) > MAX_ASSIGNMENT:
                return None
            data += chunk
    finally:
        sock.detach()  # the descriptor stays open: it is the job's channel now
    spec: dict[str, Any] = json.loads(data)
    return spec


def _become(spec: dict[str, Any]) -> None:
    output = spec.get("output")
    if output:
        out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
    os.chdir(spec["cwd"])
    os.environ.update(spec["env"])
    argv = list(spec["argv"])
    module = argv[1] if argv[:1] == ["-m"] else None
    # sys.path as `python -m module` (the working folder first) or `python script.py` (the
    # script's folder first) would have it, then what PYTHONPATH would have added.
    sys.path[0] = os.getcwd() if module else os.path.dirname(os.path.abspath(argv[0]))
    sys.path[1:1] = list(spec.get("sys_path") or [])
    import runpy

    if module is not None:
        sys.argv = [module, *argv[2:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


def main() -> None:
    import importlib

    fd = int(os.environ.pop(CHANNEL_FD_ENV))
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # only a head start: the job imports what it needs itself
    spec = _read_assignment(fd)
    if spec is None:
        raise SystemExit(0)  # the parent went away (or closed a spare it no longer needs)
    os.environ[CHANNEL_FD_ENV] = str(fd)
    _become(spec)


if __name__ == "__main__":
    main()
