"""FedAvg's controller holds one model while a round's updates arrive: the global model it sent
is on disk by then and nothing keeps the in-memory copy (a 1 GB model cost the server two).

The test plays the server's end of the job channel on a socket pair: it reads each task, writes
the sites' results as safetensors files and answers as the server would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from tests.unit.workflows.conftest import SITES, ChannelPair

from shoal.fl.model import FLModel
from shoal.wire.channel import encode
from shoal.wire.models import load_params, save_params
from shoal.workflows.fedavg import FedAvg


def _fake_server(sock: socket.socket, run_dir: Path, sent: weakref.ref[np.ndarray], seen: list[Any]) -> None:
    """Answer every task with each site adding its number to the model it was sent; note, per
    task, whether the controller still held the model of the first task when it waited."""
    reader = sock.makefile("rb")
    while line := reader.readline():
        message = json.loads(line)
        if message["op"] != "task":
            continue
        deadline = time.monotonic() + 5
        while sent() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(sent() is None)
        model = load_params(Path(message["model_path"]))
        for number, site in enumerate(SITES, start=1):
            path = run_dir / f"{message['task_id']}-{site}.safetensors"
            save_params({"w": np.asarray(model["w"]) + number}, path)
            reply = {"op": "result", "task_id": message["task_id"], "site": site, "path": str(path)}
            sock.sendall(encode({**reply, "num_examples": 1}))


def test_the_model_sent_is_not_held_while_its_round_runs(tmp_path: Path, channel_pair: ChannelPair) -> None:
    ctx, server_sock = channel_pair.ctx, channel_pair.server
    handed = [FLModel(params={"w": np.zeros(1000, dtype=np.float32)})]
    sent = weakref.ref(handed[0].params["w"])
    seen: list[Any] = []
    server = threading.Thread(target=_fake_server, args=(server_sock, tmp_path, sent, seen), daemon=True)
    server.start()

    # pop(): the call holds the only reference, as in FedAvg.run's train(self.initial_model(...))
    model, _ = FedAvg(ctx, num_rounds=2).train(handed.pop())
    channel_pair.channel.close()  # the server's end reads to its end and stops
    server.join(timeout=10)

    assert seen == [True, True]  # freed before either round's results came in
    np.testing.assert_allclose(model.params["w"], np.full(1000, 3.0))  # 0 + 1.5 + 1.5
