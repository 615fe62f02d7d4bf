"""The simulator's worker processes and their end: whatever way a simulation ends (the job
done, an exception, Ctrl-C, SIGTERM), no worker, and no process a script started, outlives it.

Workers are fresh interpreters (``python -c``, never a fork of the simulator) that speak JSON
lines over a socket pair: a ``SiteTask`` goes down, the answer comes back. Not
``concurrent.futures``, which pickles what it passes (decisions/0023).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from types import FrameType, TracebackType
from typing import Any

from shoal.simulator.worker import SiteTask
from shoal.wire.channel import encode

log = logging.getLogger("shoal.simulator")

#: How long idle workers get to leave once the job is over before they are killed (they leave
#: in milliseconds; one kept alive by a thread its script left running does not).
IDLE_EXIT_GRACE = 2.0
#: How long the pool's threads get to notice killed workers and end.
KILLED_EXIT_WAIT = 10.0

#: A worker's start: the simulator's import path (from before the server app's ``custom/`` was
#: added: a site script must not import the server's custom code, which no real site has), then
#: ``sim_worker.serve`` on the inherited socket.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from shoal.simulator.worker import serve; serve(int(sys.argv[2]))"
)


class WorkerDied(Exception):
    """A worker process ended while it ran a site's task (``os._exit`` in a script, a crash):
    that site fails, and so does every site still queued (the pool is broken)."""


class _Terminated(SystemExit):
    """SIGTERM arrived: unwind the simulation (its workers are stopped on the way out) and exit
    with 143, the status a shell shows for SIGTERM. An exit rather than dying of the signal
    again: the interpreter's exit handlers release the pool's semaphores (the resource tracker
    warns about leaked ones otherwise)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class _Interrupts:
    """SIGINT and SIGTERM while a simulation runs (main thread only; a handler the program set
    itself is left alone).

    Either one unwinds the run, as KeyboardInterrupt or ``_Terminated``, so that the workers
    are stopped on the way out: left alone, SIGTERM would end this process at once and a
    worker in the middle of a script would outlive it. While the workers are being stopped
    (``held()``) signals wait, so a second Ctrl-C cannot cut that short, and are delivered
    afterwards.
    """

    def __init__(self) -> None:
        self._holding = False
        self._held: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
            for sig, default in defaults.items():
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            held, self._held = set(self._held), []
            for sig in (signal.SIGTERM, signal.SIGINT):  # the stronger one wins
                if sig in held:
                    self._on_signal(sig, None)  # raises

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._holding:
            self._held.append(signum)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise _Terminated


class WorkerPool:
    """The worker processes, and their end: whatever way the simulation ends (the job done,
    an exception, Ctrl-C, SIGTERM), no worker, and no process a script started, outlives it.

    ``submit(spec)`` queues a site run and returns a ``Future`` of its answer. Each worker has
    a thread here that takes the next run off the queue, writes it to the worker and reads the
    answer. Workers start from a clean interpreter, never as a fork of this process: the
    controller's modules, threads and the server app's custom code stay out. Each leads its own
    process group, which is how it is killed.
    """

    def __init__(self, size: int) -> None:
        self._interrupts = _Interrupts()
        self._runs: queue.Queue[tuple[SiteTask, Future[dict[str, Any]]] | None] = queue.Queue()
        self._broken: str | None = None
        self._stopped = False
        import_path = json.dumps(list(sys.path))
        self._workers = [_Worker(import_path) for _ in range(max(1, size))]
        self._threads = [
            threading.Thread(
                target=self._serve, args=(w,), name=f"shoal-simulator-worker-{w.proc.pid}", daemon=True
            )
            for w in self._workers
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> WorkerPool:
        self._interrupts.install()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop(grace=IDLE_EXIT_GRACE if exc is None else 0.0)
        finally:
            self._interrupts.restore()

    def submit(self, spec: SiteTask) -> Future[dict[str, Any]]:
        """Queue one site run; its future holds the worker's answer, or ``WorkerDied``."""
        future: Future[dict[str, Any]] = Future()
        if self._stopped or self._broken is not None:
            future.set_exception(WorkerDied(self._broken or "the simulator's workers were stopped"))
        else:
            self._runs.put((spec, future))
        return future

    def _serve(self, worker: _Worker) -> None:
        """One worker's thread: runs in, answers out, until ``stop`` or the worker's death."""
        while (item := self._runs.get()) is not None:
            spec, future = item
            if not future.set_running_or_notify_cancel():
                continue
            if self._broken is not None:
                future.set_exception(WorkerDied(self._broken))
                continue
            answer = worker.run(spec)
            if answer is None:
                self._broken = worker.death(spec.site)
                future.set_exception(WorkerDied(self._broken))
            else:
                future.set_result(answer)
        worker.close()

    def stop(self, *, grace: float) -> None:
        """Shut the pool down: runs not started are cancelled; idle workers leave by themselves
        within ``grace`` seconds; then every worker's process group is killed (a worker still
        running a script, and whatever processes scripts left running). Ctrl-C and SIGTERM wait
        until this is done."""
        if self._stopped:
            return
        self._stopped = True
        with self._interrupts.held():
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._runs.get_nowait()
                    if item is not None:
                        item[1].cancel()
            for _ in self._threads:
                self._runs.put(None)
            deadline = time.monotonic() + grace
            for worker in self._workers:
                worker.exited(max(0.0, deadline - time.monotonic()))
            for worker in self._workers:
                worker.kill()
            for thread in self._threads:
                thread.join(KILLED_EXIT_WAIT)
                if thread.is_alive():
                    log.warning("a worker's thread did not end within %.0fs", KILLED_EXIT_WAIT)


class _Worker:
    """One worker process and this side of its socket pair."""

    def __init__(self, import_path: str) -> None:
        mine, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, import_path, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._sock = mine
        self._reader = mine.makefile("rb")

    def run(self, spec: SiteTask) -> dict[str, Any] | None:
        """Send one run, wait for its answer; None if the worker ended instead."""
        try:
            self._sock.sendall(encode(spec.to_json()))
            line = self._reader.readline()
        except OSError:
            return None
        if not line:
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the worker to end, without reaping it (so its pid,
        the id of its process group, stays its own until ``kill``)."""
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except ProcessLookupError:  # reaped already
            return True
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)

    def death(self, site: str) -> str:
        """Why the pool is now broken, with the worker's exit status once it has one."""
        status = "unknown (it closed its socket but still runs)"
        if self.exited(5.0):
            with contextlib.suppress(ChildProcessError):
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is not None and info.si_code == os.CLD_EXITED:
                    status = str(info.si_status)
                elif info is not None:
                    status = f"killed by signal {info.si_status}"
        return f"worker {self.proc.pid} ended with exit status {status} while it ran {site}'s task"

    def close(self) -> None:
        """Close this end: an idle worker reads the end of its input and leaves."""
        with contextlib.suppress(OSError):
            self._reader.close()
            self._sock.close()

    def kill(self) -> None:
        """SIGKILL the worker's process group: the worker, if it is still there, and any
        process its scripts started; then reap it. The worker is not reaped before this, so
        its pid (the group's id) cannot have passed to another process."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILLED_EXIT_WAIT)
        self.close()
