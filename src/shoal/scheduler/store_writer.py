"""The scheduler's store writes, in ONE writer thread, in the order they were asked for.

A durable commit waits for an fsync, tens of milliseconds on a busy disk, and on the event loop
it held every request behind it (decisions/0037). One thread keeps a job's writes in order
without locks of our own. Owned by ``shoal.scheduler.scheduler.Scheduler`` (its ``writer``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from shoal.store.leases import LeaseLost

log = logging.getLogger("shoal.scheduler")

T = TypeVar("T")


class StoreWriter:
    """The one thread that commits the scheduler's writes."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-store-writer")

    async def write(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store write in the writer thread and wait for its commit."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args, **kwargs))

    def write_soon(self, call: Callable[..., object], *args: Any) -> None:
        """Queue a store write behind those already asked for, without waiting for it (from code
        that cannot await); a failure is logged."""
        future = self._thread.submit(call, *args)
        future.add_done_callback(_log_write_failure)

    def close(self) -> None:
        """Wait for the writes already asked for."""
        self._thread.shutdown(wait=True)


def _log_write_failure(future: Future[object]) -> None:
    exc = future.exception()
    if isinstance(exc, LeaseLost):  # the lease renewal notices too, and forgets the job
        log.warning("a write was refused: %s", exc)
    elif exc is not None:
        log.error("a store write failed", exc_info=exc)
