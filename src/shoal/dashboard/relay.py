"""The dashboard's way to the shoal server: the SDK's AdminClient, with the admin's own kit.

Every call is one the CLI makes for the same admin, so the server authorizes it exactly as it
would the CLI's: the dashboard adds no right and hides none the server grants. The client is
blocking (standard library TLS), so calls run on a thread pool of their own; long polls (a
job's events) hold a thread each while they wait, and must not starve the page's other calls,
hence more threads than aiohttp's default pool. Idle clients are kept, so a call reuses an open
TLS connection instead of a handshake.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shoal.api.client import AdminClient
from shoal.api.kits import AdminKit

THREADS = 32
IDLE_CLIENTS = 8


class Relay:
    def __init__(self, kit: AdminKit, study: str) -> None:
        self.kit = kit
        self.study = study
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="shoal-relay")
        self._idle: list[AdminClient] = []
        self._busy: set[AdminClient] = set()

    def _with_client(self, work: Callable[[AdminClient], Any]) -> Any:
        try:
            client = self._idle.pop()  # list.pop and append are atomic: no lock needed
        except IndexError:
            client = AdminClient(self.kit)
        self._busy.add(client)
        try:
            result = work(client)
        except BaseException:
            client.close()
            raise
        finally:
            self._busy.discard(client)
        if len(self._idle) < IDLE_CLIENTS:
            self._idle.append(client)
        else:
            client.close()
        return result

    async def run(self, work: Callable[[AdminClient], Any]) -> Any:
        """``work(client)`` on a pool thread with an idle (or new) client; its ShoalError as is."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._with_client, work))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``AdminClient.<method>(*args, **kwargs)``, as ``run`` runs work."""
        return await self.run(lambda client: getattr(client, method)(*args, **kwargs))

    def close(self) -> None:
        """Stop: close the idle clients and interrupt the busy ones, so a thread held in a long
        poll fails at once (a ShoalError nobody waits for) instead of keeping the process
        alive until its poll ends."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in [*self._busy]:
            client.interrupt()
        for client in [*self._idle]:
            client.close()
        self._idle.clear()
