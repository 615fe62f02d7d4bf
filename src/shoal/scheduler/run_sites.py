"""Where each of a job run's sites stands: failed, gone, told to end the job, confirmed its end;
and whether every site is accounted for, which the run's end waits for (bounded).

Owned by ``shoal.scheduler.runner.JobRun`` (its ``members``), which says what each change means
for the job (the workflow told, the first error kept, the live status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection

from shoal.wire.messages import Message


class SiteMembership:
    """The sites of one run (``sites``: every site it was deployed to) and how each stands."""

    def __init__(self, sites: Collection[str]) -> None:
        self._sites = sites
        self.failed: set[str] = set()  # whose job process failed (or that left): the workflow knows
        self.confirmed: set[str] = set()  # sites that said their part of the job has ended
        self.gone: set[str] = set()  # sites that disconnected: nobody left to confirm
        self._told_to_end: set[str] = set()  # sites sent "end"/"abort" already
        self.settled = asyncio.Event()  # every site confirmed the end or is gone

    def fail(self, site: str) -> bool:
        """``site`` failed; whether this is news (a site fails once until it rejoins)."""
        if site in self.failed:
            return False
        self.failed.add(site)
        return True

    def rejoin(self, site: str) -> bool:
        """``site`` is back; whether it had gone (then it is deployed to again, failed no more)."""
        if site not in self.gone:
            return False
        self.gone.discard(site)
        self.failed.discard(site)
        return True

    def lose(self, site: str) -> None:
        self.gone.add(site)

    def confirm(self, site: str) -> None:
        self.confirmed.add(site)
        self.check_settled()

    def check_settled(self) -> None:
        if self.confirmed | self.gone >= set(self._sites):
            self.settled.set()

    async def settle_within(self, grace: float) -> list[str]:
        """Wait up to ``grace`` seconds for every site to confirm the end or be gone; the
        stragglers then (none once settled)."""
        self.check_settled()
        try:
            await asyncio.wait_for(self.settled.wait(), grace)
        except TimeoutError:
            pass
        return self.stragglers()

    def stragglers(self) -> list[str]:
        """The sites that neither confirmed the end nor are gone."""
        return sorted(set(self._sites) - self.confirmed - self.gone)

    async def tell_to_end(
        self, message: Callable[[], Message], send: Callable[[str, Message], Awaitable[bool]]
    ) -> None:
        """Send each site still in the job its "end" (or "abort", as ``message`` makes it) once;
        a site that cannot be told counts as gone."""
        for site in sorted(self._sites):
            if site in self.confirmed or site in self.gone or site in self._told_to_end:
                continue
            self._told_to_end.add(site)
            if not await send(site, message()):
                self.gone.add(site)
