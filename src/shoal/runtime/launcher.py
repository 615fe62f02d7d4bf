"""Warm job processes: a fork server with numpy and shoal imported, one fork per job.

Starting a job's process (a site's training script, the server's job controller) from scratch
costs an interpreter start plus numpy and shoal imports: ~0.3 s of CPU on this project's
two-core reference machine, three times for a one-round two-site job. So the server and each
site agent start one fork server ahead of time (``python -u -m shoal.runtime.launcher MODULE...``):
it imports those modules once and waits on its control socket. For each job it forks; the
child turns into the job's process by ``runpy``, exactly as ``python -u <argv>`` would run it,
and the fork server reports the child's pid and, when it ends, its exit code. A fork takes a
few milliseconds and shares the imported modules' memory with every job process.

What stays the same as a fresh process: its own process group (abort and shutdown kill the
group) in a session without a controlling terminal, stdout/stderr where the parent wants them,
``SHOAL_CHANNEL_FD``, exit codes
(an uncaught exception exits 1 with its traceback, ``sys.exit`` as usual, death by a signal is
minus its number), what a script counts on at its exit (threads joined, ``atexit``, files
flushed; ``shoal.runtime.job_exit``, which skips the costly teardown of the shared modules),
and fresh random state: numpy's global generator is reseeded in every child
(Python's ``random`` reseeds itself after a fork), so two jobs never draw the same numbers. No
code of a job runs in the fork server before the fork, and the server and the agent never fork
themselves. The job processes stay in the fork server's session, whose scheduling group the fork
server gives the job nice value at its start (``shoal.sandbox.priority``): on a kernel that
schedules by session, a session per job would run every job at the host's weight, however
niced. A fork server whose parent dies reads EOF and exits. ``SHOAL_WARM_SPARES=0`` starts
every job process from scratch instead (decisions/0010).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

from shoal import settings
from shoal.runtime.job_exit import exit_code, leave
from shoal.sandbox.priority import session_nice, yield_session
from shoal.wire.channel import CHANNEL_FD_ENV, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, NoReturn, Protocol

    class JobProcess(Protocol):
        """What the server and the agent need of a job's process, forked or started cold."""

        @property
        def pid(self) -> int: ...
        @property
        def returncode(self) -> int | None: ...
        @property
        def stdout(self) -> asyncio.StreamReader | None: ...
        async def wait(self) -> int: ...


CONTROL_FD_ENV = settings.FORK_SERVER_FD
MAX_MESSAGE = 1 << 20  # a fork request (argv, environment additions, sys.path)
MAX_REPLY = 4096  # a pid or an exit code
#: The exit code of a job process whose fork server died first (nobody can reap it and say).
EXIT_UNKNOWN = 255
#: The exit code of a job process that could not confine itself (its code never ran).
EXIT_UNCONFINED = 126
ONCE = "--once"  # ``python -m shoal.runtime.launcher --once``: a cold job process
SPEC_ENV = settings.JOB_SPEC  # what a cold job process is to become

log = logging.getLogger("shoal.warm")


def enabled() -> bool:
    return settings.flag(settings.WARM_SPARES) and hasattr(os, "fork")


class ForkedProcess:
    """A job process the fork server started: its exit code arrives over the control socket."""

    def __init__(self, pid: int) -> None:
        import asyncio

        self.pid = pid
        self.returncode: int | None = None
        self.stdout: asyncio.StreamReader | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        import asyncio

        return await asyncio.shield(self._exited)


class _Connection:
    """Our side of one running fork server: fork requests out; pids and exit codes back."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        import asyncio

        self.proc = proc
        self.sock = sock
        self.children: dict[int, ForkedProcess] = {}
        self.alive = True
        self._lock = asyncio.Lock()  # one fork request in flight: replies come back in order
        self._reply: asyncio.Future[ForkedProcess] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def fork(self, spec: dict[str, Any], fds: list[int]) -> ForkedProcess:
        import asyncio

        async with self._lock:
            if not self.alive:
                raise ConnectionError("the fork server is gone")
            self._reply = asyncio.get_running_loop().create_future()
            socket.send_fds(self.sock, [encode(spec)], fds)
            return await self._reply

    async def _read(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, MAX_REPLY):
                message = json.loads(data)
                if "pid" in message:
                    # Registered before anything else is read: its exit notice may come next.
                    child = self.children[message["pid"]] = ForkedProcess(int(message["pid"]))
                    if self._reply is not None and not self._reply.done():
                        self._reply.set_result(child)
                elif "exited" in message:
                    gone = self.children.pop(int(message["exited"]), None)
                    if gone is not None:
                        gone.exited(int(message["code"]))
        except (OSError, ValueError) as exc:
            log.warning("fork server connection broke: %s", exc)
        finally:
            self.alive = False
            self.sock.close()  # a dead fork server's socket: the host would keep one per death
            if self._reply is not None and not self._reply.done():
                self._reply.set_exception(ConnectionError("the fork server is gone"))
            for child in self.children.values():
                _watch_orphan(child)
            self.children.clear()

    async def close(self) -> None:
        import asyncio

        self.sock.close()  # the fork server reads EOF and exits; its children run on
        self._reader.cancel()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except (TimeoutError, ProcessLookupError):
            self.proc.kill()


def _watch_orphan(child: ForkedProcess) -> None:
    """The fork server died before this child: learn when it ends (a pidfd works for processes
    that are not ours); its exit code is lost with the server (EXIT_UNKNOWN)."""
    import asyncio

    try:
        pidfd = os.pidfd_open(child.pid)
    except (OSError, AttributeError):
        child.exited(EXIT_UNKNOWN)
        return
    loop = asyncio.get_running_loop()

    def ended() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        child.exited(EXIT_UNKNOWN)

    loop.add_reader(pidfd, ended)


class ForkServer:
    """Starts job processes by forking a warm fork server (cold when that is off or broken)."""

    def __init__(self, preload: tuple[str, ...], *, pipe_stdout: bool) -> None:
        self.preload = preload
        self.pipe_stdout = pipe_stdout
        self._server: asyncio.Task[_Connection] | None = None

    def warm_up(self) -> None:
        """Start the fork server now (once the event loop runs), so the first job finds it."""
        import asyncio

        if enabled() and self._server is None:
            self._server = asyncio.get_running_loop().create_task(self._spawn())

    async def launch(
        self,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        sys_path: list[str] | None = None,
        output_file: str | None = None,
        confinement: dict[str, Any] | None = None,
    ) -> tuple[JobProcess, socket.socket]:
        """Run ``python -u <argv>`` (``argv`` is ``["-m", module, ...]`` or ``[script, ...]``);
        returns the process and our end of its channel. Forked from the fork server when it
        runs; a new interpreter with the same arguments when warm processes are off
        (``SHOAL_WARM_SPARES=0``) or the fork server cannot be had. Either way the process
        confines itself to ``confinement`` (``shoal.sandbox.confinement``) before the job's
        code runs."""
        spec = {
            "argv": argv,
            "cwd": cwd,
            "env": env,
            "sys_path": sys_path or [],
            "output": output_file,
            "confinement": confinement,
        }
        if enabled():
            connection = await self._connection()
            if connection is not None:
                try:
                    return await self._fork(connection, spec)
                except OSError as exc:
                    log.warning("fork server failed (%s); starting the job's process cold", exc)
                    self._server = None  # the next launch starts a new one
        return await _start(spec, pipe_stdout=self.pipe_stdout)

    async def _connection(self) -> _Connection | None:
        """The running fork server; one that died is replaced (once per launch)."""
        for _ in range(2):
            self.warm_up()
            assert self._server is not None
            try:
                connection = await self._server
            except OSError as exc:
                log.warning("could not start the fork server: %s", exc)
                self._server = None
                return None
            if connection.alive:
                return connection
            self._server = None
        return None

    async def _fork(self, connection: _Connection, spec: dict[str, Any]) -> tuple[JobProcess, socket.socket]:
        import asyncio

        parent, child = socket.socketpair()
        read_end = write_end = -1
        if self.pipe_stdout and not spec["output"]:
            read_end, write_end = os.pipe()
        try:
            fds = [child.fileno()] + ([write_end] if write_end >= 0 else [])
            proc = await connection.fork(spec, fds)
        except BaseException:
            parent.close()
            if read_end >= 0:
                os.close(read_end)
            raise
        finally:
            child.close()  # the job process holds its own copies now
            if write_end >= 0:
                os.close(write_end)
        if read_end >= 0:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            pipe = os.fdopen(read_end, "rb", buffering=0)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
            proc.stdout = reader
        return proc, parent

    async def _spawn(self) -> _Connection:
        import asyncio

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-u",
                "-m",
                "shoal.runtime.launcher",
                *self.preload,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
                env={**os.environ, CONTROL_FD_ENV: str(child.fileno())},
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        return _Connection(proc, parent)

    async def close(self) -> None:
        """Stop the fork server (the job processes it started run on); start no more."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            connection = await server
        except OSError:
            return
        await connection.close()


async def _start(spec: dict[str, Any], *, pipe_stdout: bool) -> tuple[JobProcess, socket.socket]:
    """A cold interpreter in its own session that does what a fork would (``--once``: confine
    itself, then ``python -u <argv>``), one end of a socketpair as its channel, its output into
    the spec's file, a pipe (``pipe_stdout``) or nowhere."""
    import asyncio

    output_file = spec["output"]
    parent, child = socket.socketpair()
    log_file = open(output_file, "ab") if output_file else None  # noqa: SIM115 - handed to the child
    if log_file is not None:
        stdout: Any = log_file
        stderr: Any = log_file
    elif pipe_stdout:
        stdout, stderr = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
    else:
        stdout = stderr = asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            "-m",
            "shoal.runtime.launcher",
            ONCE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(child.fileno(),),
            env={
                **os.environ,
                CHANNEL_FD_ENV: str(child.fileno()),
                SPEC_ENV: json.dumps({**spec, "output": None}),
                "PYTHONUNBUFFERED": "1",
            },
            cwd=spec["cwd"],
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
        if log_file is not None:
            log_file.close()
    return proc, parent


# --- the fork server's side -------------------------------------------------------------------


def _serve(control: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Fork a child per request and report its pid, then its exit code; returns only in a child
    (its assignment and descriptors). Ends the process when the parent goes away."""
    import select
    import signal

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears of exits
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    while True:
        readable, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in readable:
            while True:
                try:
                    os.read(wake_read, 4096)
                except BlockingIOError:
                    break
            _report_exits(control)
        if control.fileno() in readable:
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
            if not data:
                raise SystemExit(0)  # our parent went away; the job processes run on
            spec: dict[str, Any] = json.loads(data)
            in_session, session_made = os.pipe()
            pid = os.fork()
            if pid == 0:
                # Before our parent hears the pid, a kill of its group must land. A group, not a
                # session: the job stays in this session's low-priority scheduling group (and
                # this session has no controlling terminal for it to open).
                os.setpgid(0, 0)
                os.close(session_made)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (in_session, wake_read, wake_write):
                    os.close(fd)
                control.close()
                return spec, fds
            os.close(session_made)
            os.read(in_session, 1)  # EOF once the child has its own process group
            os.close(in_session)
            for fd in fds:
                os.close(fd)
            control.sendall(encode({"pid": pid}))


def _report_exits(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.sendall(encode({"exited": pid, "code": os.waitstatus_to_exitcode(status)}))


def _become(spec: dict[str, Any], fds: list[int], *, keep_stdio: bool = False) -> NoReturn:
    """In the forked child (already in its own process group), or a cold ``--once`` interpreter
    (``keep_stdio``: its parent set its output): its descriptors, its confinement, then the
    job's code."""
    channel, *piped = fds
    if not keep_stdio:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        output = spec.get("output")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        out = os.open(output, flags, 0o644) if output else (piped or [null])[0]
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in {null, out}:
            if fd > 2:
                os.close(fd)
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy.random" in sys.modules:
        numpy.random.seed()  # the fork server's global state, shared by every child otherwise
    if spec.get("confinement") is not None:
        from shoal.sandbox.confinement import apply

        try:
            apply(spec["confinement"], keep_fds={0, 1, 2, channel})
        except OSError as exc:  # never run a job's code less confined than its host asked
            os.write(2, f"shoal: cannot confine the job's process: {exc}\n".encode())
            os._exit(EXIT_UNCONFINED)
    os.environ[CHANNEL_FD_ENV] = str(channel)
    os.chdir(spec["cwd"])
    os.environ.update(spec["env"])
    argv = list(spec["argv"])
    module = argv[1] if argv[:1] == ["-m"] else None
    # sys.path as `python -m module` (the working folder first) or `python script.py` (the
    # script's folder first) would have it, then what PYTHONPATH would have added.
    sys.path[0] = os.getcwd() if module else os.path.dirname(os.path.abspath(argv[0]))
    sys.path[1:1] = list(spec.get("sys_path") or [])
    import runpy

    try:
        if module is not None:
            sys.argv = [module, *argv[2:]]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        leave(exit_code(exc))
    leave(0)  # an uncaught exception instead goes the interpreter's way: its traceback, exit 1


def main() -> None:
    import gc
    import importlib

    if sys.argv[1:] == [ONCE]:  # a cold start: the job's process itself, without a fork server
        spec_text, channel = settings.take(SPEC_ENV), settings.whole_number(CHANNEL_FD_ENV)
        if spec_text is None or channel is None:
            raise SystemExit(f"{ONCE} is for the launcher: {SPEC_ENV} and {CHANNEL_FD_ENV} are unset")
        _become(json.loads(spec_text), [channel], keep_stdio=True)
        return
    control_fd = settings.take(CONTROL_FD_ENV)
    if control_fd is None:
        raise SystemExit(f"the fork server is started by shoal's hosts: {CONTROL_FD_ENV} is unset")
    control = socket.socket(fileno=int(control_fd))
    # Before the imports: they are the first work done at the jobs' priority.
    nice = settings.whole_number(settings.JOB_NICE) or 0
    if yield_session(nice) is None and nice > 0 and session_nice() is not None:
        # to the host's log: its jobs now take the CPU as one group as heavy as the host
        print(
            "shoal fork server: the kernel refused to lower the job processes' session priority",
            file=sys.stderr,
        )
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # only a head start: the job imports what it needs itself
    # What the imports made lives as long as any job process: out of the collector's sight
    # (Python's advice for fork servers). A child's collections, and the full one at its exit,
    # then skip it (exit ~45 -> ~15 ms here), and reading those objects does not copy them.
    gc.freeze()
    spec, fds = _serve(control)
    _become(spec, fds)


if __name__ == "__main__":
    main()
