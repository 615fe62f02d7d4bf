"""A workflow's end of the job channel, for tests that play the server's end on a socket pair."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.wire.channel import SyncChannel
from shoal.workflows.base import WorkflowContext

SITES = ("site-1", "site-2")


@dataclass
class ChannelPair:
    """The workflow's context (both sites, min_clients 2), its channel, and the server's socket."""

    ctx: WorkflowContext
    channel: SyncChannel
    server: socket.socket


@pytest.fixture
def channel_pair(tmp_path: Path) -> Iterator[ChannelPair]:
    server_sock, job_sock = socket.socketpair()
    channel = SyncChannel(job_sock)
    ctx = WorkflowContext(
        channel,
        job_id="j1",
        sites=list(SITES),
        run_dir=tmp_path,
        workspace=tmp_path / "workspace",
        app_dir=tmp_path / "app",
        min_clients=2,
    )
    yield ChannelPair(ctx, channel, server_sock)
    channel.close()
    server_sock.close()
