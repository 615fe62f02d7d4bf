"""FedAvg reads each site's update once: the server's update checks run in the pass that folds it
into the sum (``checks_on_read``, decisions/0050), not in a pass of their own before it.

The test plays the server's end of the job channel on a socket pair, as test_fedavg_memory does:
it reads each task and answers it with result files it writes, as the server would.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from tests.unit.workflows.conftest import ChannelPair

from shoal.fl.model import FLModel
from shoal.wire.channel import encode
from shoal.wire.models import save_params
from shoal.workflows.base import BadUpdate, WorkflowContext
from shoal.workflows.fedavg import FedAvg

N = 2**20  # float32 values per update: 4 MiB, streamed from its file in chunks


def _serve(sock: socket.socket, run_dir: Path, updates: dict[str, tuple[np.ndarray, int]]) -> None:
    """Answer every task with each site's (update, num_examples)."""
    reader = sock.makefile("rb")
    while line := reader.readline():
        message = json.loads(line)
        if message["op"] != "task":
            continue
        for site, (values, examples) in updates.items():
            path = run_dir / f"{message['task_id']}-{site}.safetensors"
            save_params({"w": values}, path)
            reply = {"op": "result", "task_id": message["task_id"], "site": site, "path": str(path)}
            sock.sendall(encode({**reply, "num_examples": examples}))


def _bytes_read() -> int:
    """Bytes this process has taken from files and sockets by read calls (/proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _train(
    ctx: WorkflowContext, server_sock: socket.socket, updates: dict[str, tuple[np.ndarray, int]]
) -> FLModel:
    server = threading.Thread(target=_serve, args=(server_sock, ctx.run_dir, updates), daemon=True)
    server.start()
    try:
        model, _ = FedAvg(ctx, num_rounds=1).train(FLModel(params={"w": np.zeros(N, dtype=np.float32)}))
    finally:
        server_sock.shutdown(socket.SHUT_RDWR)
        server.join(timeout=10)
    return model


def test_each_update_is_read_once_and_the_mean_is_the_same(
    channel_pair: ChannelPair,
) -> None:
    """Checked and folded in one read of its file: before, the check read each update whole,
    and then the fold read it again (twice the bytes)."""
    ctx, server_sock = channel_pair.ctx, channel_pair.server
    rng = np.random.default_rng(0)
    one, two = rng.standard_normal(N, dtype=np.float32), rng.standard_normal(N, dtype=np.float32)
    before = _bytes_read()
    model = _train(ctx, server_sock, {"site-1": (one, 1), "site-2": (two, 3)})
    read = _bytes_read() - before
    assert 2 * one.nbytes <= read < 3 * one.nbytes, f"{read} bytes read for two updates of {one.nbytes}"
    expected = (one.astype(np.float64) + 3 * two.astype(np.float64)) / 4
    np.testing.assert_allclose(model.params["w"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("examples", [1, 0], ids=["weighed", "weighs-nothing"])
def test_a_non_finite_value_in_an_updates_last_chunk_is_refused_naming_its_site(
    channel_pair: ChannelPair, examples: int
) -> None:
    """Found in the fold's own pass, at the update's very end; an update that weighs nothing is
    not folded in, yet is read through and refused all the same."""
    ctx, server_sock = channel_pair.ctx, channel_pair.server
    bad = np.ones(N, dtype=np.float32)
    bad[-1] = np.nan
    with pytest.raises(BadUpdate) as caught:
        _train(ctx, server_sock, {"site-1": (np.ones(N, dtype=np.float32), 1), "site-2": (bad, examples)})
    assert caught.value.site == "site-2"
    assert "tensor 'w' holds NaN or infinite values" in str(caught.value)
