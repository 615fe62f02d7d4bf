"""The job-process channel (shoal.wire.channel.SyncChannel): its last-word handshake, and reads
with a timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from shoal.wire.channel import SyncChannel, encode


def test_the_last_word_survives_the_parent_writing_at_the_same_moment() -> None:
    """The child sends its outcome and waits; the parent, still writing to it, reads every line
    (the outcome included) and closes its side; only then does the child return."""
    parent_sock, child_sock = socket.socketpair()
    child = SyncChannel(child_sock)
    returned: list[float] = []

    def child_main() -> None:
        child.send({"op": "error", "status": "FAILED"})
        child.wait_closed(timeout=10)
        returned.append(time.monotonic())
        child.close()

    async def parent() -> tuple[list[dict[str, object]], float]:
        reader, writer = await asyncio.open_connection(sock=parent_sock)
        for i in range(50):  # e.g. site_failed and metric relays, racing the child's exit
            writer.write(encode({"op": "metric", "i": i}))
        await writer.drain()
        seen = [json.loads(await reader.readline())]
        closed_at = time.monotonic()
        writer.write_eof()  # what the server does once it has read the outcome
        assert await reader.readline() == b""  # the child exits: end of file, nothing lost
        writer.close()
        return seen, closed_at

    thread = threading.Thread(target=child_main)
    thread.start()
    seen, closed_at = asyncio.run(parent())
    thread.join(timeout=10)
    assert seen == [{"op": "error", "status": "FAILED"}]
    assert returned and returned[0] >= closed_at


def test_wait_closed_gives_up_after_its_timeout() -> None:
    parent_sock, child_sock = socket.socketpair()
    child = SyncChannel(child_sock)
    start = time.monotonic()
    child.wait_closed(timeout=0.3)  # the parent never closes
    assert 0.3 <= time.monotonic() - start < 3
    child.close()
    parent_sock.close()


def test_a_receive_that_timed_out_leaves_the_channel_working() -> None:
    """A socket file fails every read after one timed out: a workflow whose round deadline
    passed (a receive with a timeout) then read "the server closed the channel"."""
    ours, theirs = socket.socketpair()
    channel = SyncChannel(ours)
    try:
        with pytest.raises(TimeoutError):
            channel.receive(0.05)
        theirs.sendall(b'{"op": "one"}\n{"op": ')  # a message and half of the next
        assert channel.receive(1) == {"op": "one"}
        with pytest.raises(TimeoutError):
            channel.receive(0.05)
        theirs.sendall(b'"two"}\n')
        assert channel.receive(1) == {"op": "two"}
        theirs.close()
        assert channel.receive(1) is None
    finally:
        channel.close()


def test_a_receive_without_waiting_takes_what_has_arrived() -> None:
    """A workflow's last look for metrics (``timeout=0``) reads the lines that arrived, even
    one longer than a single read, and times out at once when nothing did."""
    ours, theirs = socket.socketpair()
    channel = SyncChannel(ours)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            channel.receive(0)
        assert time.monotonic() - start < 0.05
        long_line = {"op": "metric", "key": "k" * 100_000}  # more than one read of 64 KiB
        theirs.sendall(json.dumps(long_line).encode() + b"\n" + b'{"op": "two"}\n')
        time.sleep(0.05)  # both lines are in the socket's buffer
        assert channel.receive(0) == long_line
        assert channel.receive(0) == {"op": "two"}
        with pytest.raises(TimeoutError):
            channel.receive(0)
    finally:
        channel.close()
        theirs.close()
