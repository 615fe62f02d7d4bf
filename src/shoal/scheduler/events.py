"""Push notification of job changes, so wait and monitor answer within milliseconds.

Every status change or round completion calls ``notify(job_id)``; a waiter holds the
version it last saw and sleeps on a Condition until the version moves. No timers, no scans.
"""

from __future__ import annotations

import asyncio


class JobEvents:
    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._versions: dict[int, int] = {}

    def version(self, job_id: int) -> int:
        return self._versions.get(job_id, 0)

    def notify(self, job_id: int) -> None:
        self._versions[job_id] = self.version(job_id) + 1
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_change(self, job_id: int, seen: int, timeout: float) -> int:
        """Return the new version once it differs from ``seen``, or the same one on timeout."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.version(job_id) != seen), timeout)
            except TimeoutError:
                pass
        return self.version(job_id)
