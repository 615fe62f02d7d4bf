"""The simulator's worker processes and their end: whatever way a simulation ends (the job
done, an exception, Ctrl-C, SIGTERM), no worker, and no process a script started, outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import wait as wait_for_ready
from multiprocessing.process import BaseProcess
from types import FrameType, TracebackType
from typing import Any

from shoal.fl.sim_worker import start_worker

log = logging.getLogger("shoal.simulator")

#: How long idle workers get to leave once the job is over before they are killed (they leave
#: in milliseconds; one kept alive by a thread its script left running does not).
IDLE_EXIT_GRACE = 2.0
#: How long the pool's own thread gets to notice killed workers and end.
KILLED_EXIT_WAIT = 10.0


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

    Workers start from a clean interpreter (forkserver, else spawn), never as a fork of this
    process: the controller's modules, threads and the server app's custom code stay out. Each
    leads its own process group (``start_worker``), which is how it is killed.
    """

    def __init__(self, size: int) -> None:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(["shoal.fl.sim_worker", "numpy"])
        self._interrupts = _Interrupts()
        self.executor = ProcessPoolExecutor(
            max_workers=size, mp_context=ctx, initializer=start_worker, initargs=(list(sys.path),)
        )
        self._stopped = False

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

    def stop(self, *, grace: float) -> None:
        """Shut the pool down: idle workers leave by themselves within ``grace`` seconds; then
        every worker's process group is killed (a worker still running a script, and whatever
        processes scripts left running). Ctrl-C and SIGTERM wait until this is done."""
        if self._stopped:
            return
        self._stopped = True
        with self._interrupts.held():
            # The pool forgets its processes on shutdown, and has no public list of them.
            workers = list(self.executor._processes.values())
            closer = threading.Thread(
                target=self.executor.shutdown,
                kwargs={"wait": True, "cancel_futures": True},
                name="shoal-simulator-pool-shutdown",
                daemon=True,
            )
            closer.start()
            closer.join(grace)
            for worker in workers:
                _kill_worker(worker)
            closer.join(KILLED_EXIT_WAIT)
            if closer.is_alive():
                log.warning("the worker pool did not shut down within %.0fs", KILLED_EXIT_WAIT)


def _kill_worker(worker: BaseProcess) -> None:
    """SIGKILL the worker's process group: the worker, if it is still there, and any process
    its scripts started. A worker that has not yet made its own group is killed by pid (only
    while it runs: once it has ended, its pid may be another process's)."""
    pid = worker.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    try:
        ended = bool(wait_for_ready([worker.sentinel], 0))
    except ValueError:  # the pool has closed the process object: it ended
        ended = True
    if not ended:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
