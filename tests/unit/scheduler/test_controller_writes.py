"""The server's lines to a job's workflow process: those queued in one turn of the event loop go
out in one write, in order (a round's results from 2,000 sites cost one system call each before:
issue 19), and what was queued before the workflow's last word still reaches it before EOF."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, cast

import pytest

from shoal.scheduler import controller_channel
from shoal.scheduler.runner import JobRun
from shoal.wire.controller import SiteMetric


class CountingSocket(socket.socket):
    """A real socket that counts the sends asyncio's transport makes on it."""

    sends = 0

    def send(self, data: Any, flags: int = 0) -> int:
        CountingSocket.sends += 1
        return super().send(data, flags)


def lines_from(sock: socket.socket) -> list[dict[str, Any]]:
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


async def run_with_channel() -> tuple[JobRun, socket.socket]:
    parent, child = socket.socketpair()
    counting = CountingSocket(fileno=parent.detach())
    run = JobRun(cast(Any, None), 7, cast(Any, None), "app", {"site-1": "app"}, 1)
    _, run.channel.writer = await asyncio.open_connection(sock=counting)
    CountingSocket.sends = 0
    return run, child


def test_lines_queued_in_one_turn_go_out_in_one_write_in_order() -> None:
    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        run, child = await run_with_channel()
        for i in range(50):
            run.channel.send(SiteMetric(site=f"site-{i}", key="loss", value=float(i)))
        await asyncio.sleep(0)  # one turn: the flush runs
        await asyncio.sleep(0)
        sends = CountingSocket.sends
        assert run.channel.writer is not None
        run.channel.writer.close()
        await run.channel.writer.wait_closed()
        received = await asyncio.to_thread(lines_from, child)
        child.close()
        return sends, received

    sends, received = asyncio.run(scenario())
    assert sends == 1
    assert [m["site"] for m in received] == [f"site-{i}" for i in range(50)]
    assert [m["value"] for m in received] == [float(i) for i in range(50)]


def test_what_was_queued_before_the_last_word_reaches_the_workflow_before_eof() -> None:
    async def scenario() -> list[dict[str, Any]]:
        run, child = await run_with_channel()
        run.channel.send(SiteMetric(site="site-1", key="loss", value=1.0))
        run.end.outcome = (cast(Any, None), "finished", None)  # the workflow's Done was just read
        run.channel.release()  # flushes, then EOF: the reader below ends
        received = await asyncio.to_thread(lines_from, child)
        child.close()
        assert run.channel.writer is not None
        run.channel.writer.close()
        return received

    assert [m["site"] for m in asyncio.run(scenario())] == ["site-1"]


def test_small_results_go_as_bytes_only_while_the_workflow_keeps_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result's bytes ride the workflow's channel (decisions/0044) only while the lines it has
    not read stay under CONTROLLER_BACKLOG_BYTES: a workflow that falls behind a round of many
    results gets the rest by file, so they wait on disk, not in the server's memory."""
    monkeypatch.setattr(controller_channel, "CONTROLLER_BACKLOG_BYTES", 2**19)

    async def scenario() -> list[bool]:
        run, child = await run_with_channel()
        seen = [run.takes_result_bytes(1000)]
        for i in range(100):  # 2 MB: more than the kernel's socket buffer holds
            run.channel.send(SiteMetric(site=f"site-{i}", key="k" * 20_000, value=1.0))
        seen.append(run.takes_result_bytes(1000))  # queued in this turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(run.takes_result_bytes(1000))  # written, not read: most waits in the server
        reading = asyncio.create_task(asyncio.to_thread(read_lines, child, 100))  # it catches up
        while not reading.done():
            await asyncio.sleep(0.01)
        seen.append(run.takes_result_bytes(1000) and len(reading.result()) == 100)
        assert run.channel.writer is not None
        run.channel.writer.close()
        await run.channel.writer.wait_closed()
        child.close()
        return seen

    assert asyncio.run(scenario()) == [True, False, False, True]


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        data += sock.recv(1 << 16)
    return data.splitlines()
