"""Transfers are watched for progress, not timed: shoal.wire.idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.wire.idle import Progress, TransferStalled, idle_timeout, watched


@pytest.mark.parametrize(
    ("raw", "expected"), [("", 60.0), ("2.5", 2.5), ("0", 60.0), ("-1", 60.0), ("x", 60.0)]
)
def test_idle_timeout_comes_from_the_env(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv("SHOAL_TRANSFER_IDLE_TIMEOUT", raw)
    assert idle_timeout() == expected


def test_a_transfer_that_keeps_moving_runs_past_the_idle_timeout() -> None:
    """Longer than the idle timeout in total, but never idle that long: it finishes. It ticks
    every 10 ms against a 1 s timeout: only a stall of the whole process near a second (a
    loaded machine) could make it look idle, where ticks every 50 ms against 0.2 s raced."""

    async def transfer(progress: Progress) -> str:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            await asyncio.sleep(0.01)
            progress.tick()
        return "done"

    async def main() -> tuple[str, float]:
        progress = Progress()
        start = time.monotonic()
        result = await watched(transfer(progress), progress, idle=1.0)
        return result, time.monotonic() - start

    result, took = asyncio.run(main())
    assert result == "done" and took >= 1.5


def test_a_transfer_that_stops_moving_is_cancelled() -> None:
    cancelled = []

    async def transfer(progress: Progress) -> None:
        progress.tick()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> float:
        progress = Progress()
        start = time.monotonic()
        with pytest.raises(TransferStalled, match="no data moved for 0.2 s"):
            await watched(transfer(progress), progress, idle=0.2)
        return time.monotonic() - start

    took = asyncio.run(main())
    assert cancelled == [True]  # the transfer (and so its connection) was closed, not left behind
    assert 0.2 <= took < 2


def test_a_transfer_error_passes_through() -> None:
    async def transfer() -> None:
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        asyncio.run(watched(transfer(), Progress(), idle=5))
