"""Each round's global model is written once by the workflow (decisions/0045): the checkpoint of a
round and the next round's task are the same model, so the task names the checkpoint the server
already took instead of a second file of the same bytes (100 MB written twice a round before)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal.fl.model import FLModel
from shoal.wire.channel import SyncChannel
from shoal.wire.models import load_params
from shoal.workflows.base import WorkflowContext


class Server:
    """The server's end of the workflow's channel: reads what the workflow sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def sent(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(self.reader.readline()) for _ in range(count)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[WorkflowContext, Server]]:
    server_sock, job_sock = socket.socketpair()
    channel = SyncChannel(job_sock)
    ctx = WorkflowContext(
        channel,
        job_id="j1",
        sites=["site-1", "site-2"],
        run_dir=tmp_path / "run",
        workspace=tmp_path / "workspace",
        app_dir=tmp_path / "app",
    )
    ctx.keeps_checkpoints = True
    server = Server(server_sock)
    yield ctx, server
    channel.close()
    server.reader.close()
    server.sock.close()


def test_the_task_after_a_checkpoint_sends_the_checkpoints_file(
    pair: tuple[WorkflowContext, Server],
) -> None:
    ctx, server = pair
    model = FLModel(params={"w": np.arange(6, dtype=np.float32)})
    ctx.checkpoint(0, model, {"next_round": 1})
    ctx.send_task("train", FLModel(params=model.params, meta={"x": 1}), round_number=1, total_rounds=2)
    checkpoint, task = server.sent(2)
    assert checkpoint["op"] == "checkpoint" and checkpoint["model_path"] == "checkpoint-0.safetensors"
    assert task["op"] == "task" and task["checkpoint_round"] == 0
    assert task["meta"] == {"x": 1}
    assert list((ctx.run_dir / "models").iterdir()) == []  # no second file of the same model
    written = load_params(ctx.run_dir / "checkpoint-0.safetensors")
    np.testing.assert_array_equal(written["w"], np.arange(6, dtype=np.float32))


def test_a_task_of_another_model_writes_its_own_file(pair: tuple[WorkflowContext, Server]) -> None:
    """Only the very params checkpointed reuse its file, and only for the next task."""
    ctx, server = pair
    model = FLModel(params={"w": np.zeros(3, dtype=np.float32)})
    ctx.checkpoint(0, model, {})
    other = {"w": np.ones(3, dtype=np.float32)}
    first = ctx.send_task("train", FLModel(params=other))
    second = ctx.send_task("train", FLModel(params=model.params))  # not right after the checkpoint
    _, task1, task2 = server.sent(3)
    for task_id, task in ((first, task1), (second, task2)):
        assert "checkpoint_round" not in task
        assert task["model_path"] == str(ctx.run_dir / "models" / f"{task_id}.safetensors")
    np.testing.assert_array_equal(load_params(Path(task2["model_path"]))["w"], np.zeros(3, dtype=np.float32))


def test_without_checkpoints_every_task_writes_its_model(pair: tuple[WorkflowContext, Server]) -> None:
    """The simulator keeps no checkpoints: its tasks carry their own files as always."""
    ctx, server = pair
    ctx.keeps_checkpoints = False
    model = FLModel(params={"w": np.zeros(3, dtype=np.float32)})
    ctx.checkpoint(0, model, {})
    task_id = ctx.send_task("train", FLModel(params=model.params))
    (task,) = server.sent(1)
    assert "checkpoint_round" not in task
    assert (ctx.run_dir / "models" / f"{task_id}.safetensors").is_file()
