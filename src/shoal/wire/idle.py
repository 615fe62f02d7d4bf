"""Transfers are judged by progress, never by the clock.

A 10 GB model over a hospital's slow link may take an hour and must not be cut; a transfer whose
TCP path silently stopped moving (a stateful firewall dropping the flow, a hung peer) must not
hang a round forever either. So both ends watch for bytes: a model download or result upload
that moves nothing for ``idle_timeout()`` seconds is dropped, and the site resumes it where the
bytes stopped (Range for downloads, the offset the server holds for uploads).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from shoal import settings

T = TypeVar("T")

ENV_IDLE = settings.TRANSFER_IDLE_TIMEOUT


def idle_timeout() -> float:
    """``$SHOAL_TRANSFER_IDLE_TIMEOUT`` seconds if it is a positive number, else 60."""
    return settings.seconds(ENV_IDLE)


class TransferStalled(Exception):
    """No byte of a transfer moved for the idle timeout."""


class Progress:
    """When a transfer last moved a byte; the code moving the bytes calls ``tick``."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last


async def watched(transfer: Awaitable[T], progress: Progress, idle: float) -> T:
    """Await ``transfer``; cancel it and raise TransferStalled once ``progress`` has not ticked
    for ``idle`` seconds. Cancelling closes its connection, which is what a resume needs."""
    task = asyncio.ensure_future(transfer)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, idle - progress.idle_for()))
            if done:
                return task.result()
            if progress.idle_for() >= idle:
                raise TransferStalled(f"no data moved for {idle:g} s")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
