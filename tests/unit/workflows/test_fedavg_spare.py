"""FedAvg sums each round into the arrays of the model before it (decisions/0054): once a
round's task is out, its model lives in the task's file, and taking its memory for the next sum
spares a fresh allocation per round (on a VM whose freed memory goes back to its host, fresh
pages cost a fault on the host each). The caller's own starting model is never written.

The server's end of the job channel is played on a socket pair, as in test_fedavg_fold.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
from tests.unit.workflows.conftest import ChannelPair
from tests.unit.workflows.test_fedavg_fold import N, _serve

from shoal.fl.model import FLModel
from shoal.workflows.fedavg import FedAvg


class _Watched(FedAvg):
    """FedAvg noting where each round's model lives and what it holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def _checkpoint(self, rnd: int, model: FLModel) -> None:
        w = model.params["w"]
        # the array itself, kept alive (so a fresh one could never get its address), and a copy
        self.seen.append((w, w.copy()))
        super()._checkpoint(rnd, model)


def test_each_round_sums_into_the_last_rounds_arrays_and_the_callers_model_is_untouched(
    channel_pair: ChannelPair,
) -> None:
    ctx, server_sock = channel_pair.ctx, channel_pair.server
    updates = {"site-1": (np.full(N, 1.0, np.float32), 1), "site-2": (np.full(N, 5.0, np.float32), 3)}
    server = threading.Thread(target=_serve, args=(server_sock, ctx.run_dir, updates), daemon=True)
    server.start()
    start = np.zeros(N, dtype=np.float32)
    workflow = _Watched(ctx, num_rounds=3)
    try:
        model, _ = workflow.train(FLModel(params={"w": start}))
    finally:
        server_sock.shutdown(socket.SHUT_RDWR)
        server.join(timeout=10)
    assert not start.any()  # the caller's arrays: never a sum's
    addresses = [array.ctypes.data for array, _ in workflow.seen]
    assert len(addresses) == 3 and len(set(addresses)) == 1, addresses  # one buffer, every round
    for _, values in workflow.seen:
        assert np.allclose(values, 4.0)  # (1 * 1 + 3 * 5) / 4, each round from whole updates
    assert model.params["w"].ctypes.data == addresses[0]
