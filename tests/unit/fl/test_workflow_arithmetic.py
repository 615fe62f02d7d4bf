"""FedAvg's and cyclic's arithmetic, against references computed here from their definitions.

The workflows run in this process against ``Sites``, the server's end of the job channel played
in memory: each task is answered at once by every site it names, with an update computed by a
function of the test. The e2e tests run the same workflows on a real federation; these pin the
numbers (weights, rounds, order, metrics) tightly enough that a changed operator shows.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.fl.cyclic import Cyclic
from shoal.fl.fedavg import FedAvg
from shoal.fl.workflow import BadUpdate, RoundFailed, WorkflowContext
from shoal.wire.channel import SyncChannel
from shoal.wire.models import load_params, save_params

Params = dict[str, np.ndarray]
Train = Callable[[str, Params, dict[str, Any]], tuple[Params, int, dict[str, float]]]


class Sites(SyncChannel):
    """The server's end of a workflow's channel, in memory: tasks are answered as they are sent."""

    def __init__(self, run_dir: Path, train: Train) -> None:  # no socket: do not call super().__init__
        self.run_dir = run_dir
        self.train = train
        self.inbox: deque[dict[str, Any]] = deque()
        self.tasks: list[dict[str, Any]] = []  # each task, with the model it carried
        self.rounds: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        if message["op"] == "round":
            self.rounds.append(message)
            return
        assert message["op"] == "task"
        model = load_params(Path(message["model_path"]))
        self.tasks.append({**message, "model": model})
        for site in message["sites"]:
            params, n, metrics = self.train(site, model, message)
            path = self.run_dir / f"{message['task_id']}-{site}.safetensors"
            save_params(params, path)
            self.inbox.append(
                {
                    "op": "result",
                    "task_id": message["task_id"],
                    "site": site,
                    "path": str(path),
                    "num_examples": n,
                    "metrics": metrics,
                }
            )

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.inbox:
            return self.inbox.popleft()
        raise TimeoutError


def context(tmp_path: Path, channel: Sites, sites: list[str]) -> WorkflowContext:
    (tmp_path / "workspace").mkdir()
    (tmp_path / "app").mkdir()
    return WorkflowContext(
        channel,
        job_id="1",
        sites=sites,
        run_dir=tmp_path / "run",
        workspace=tmp_path / "workspace",
        app_dir=tmp_path / "app",
        min_clients=1,
    )


SHIFT = {"site-a": 1.0, "site-b": -2.0, "site-c": 0.5}
SCALE = {"site-a": 0.5, "site-b": 1.5, "site-c": 1.0}
EXAMPLES = {"site-a": 3, "site-b": 7, "site-c": 0}  # site-c trains on nothing: it weighs nothing
LOSS = {"site-a": 2.0, "site-b": 4.0, "site-c": 100.0}


def local_update(site: str, model: Params, round_number: int) -> Params:
    """What each site does to the model it got: a site- and round-dependent affine map."""
    start = model or {"w": np.zeros((2, 3)), "b": np.zeros(3)}
    return {k: SCALE[site] * v + SHIFT[site] * (round_number + 1) for k, v in start.items()}


def fedavg_train(site: str, model: Params, task: dict[str, Any]) -> tuple[Params, int, dict[str, float]]:
    return local_update(site, model, task["round"]), EXAMPLES[site], {"loss": LOSS[site] + task["round"]}


def test_fedavg_is_the_example_weighted_mean_every_round(tmp_path: Path) -> None:
    sites = sorted(SHIFT)
    channel = Sites(tmp_path, fedavg_train)
    ctx = context(tmp_path, channel, sites)
    initial = {"w": np.arange(6.0).reshape(2, 3), "b": np.array([1.0, -1.0, 0.25])}
    save_params(initial, tmp_path / "app" / "init.safetensors")
    FedAvg(ctx, num_rounds=3, initial_model="init.safetensors", task_meta={"mu": 0.25}).run()

    model = initial
    for rnd in range(3):
        task = channel.tasks[rnd]
        assert task["round"] == rnd and task["total_rounds"] == 3 and task["sites"] == sites
        assert task["meta"] == {"mu": 0.25}
        for name in model:  # each round starts from the last round's mean
            np.testing.assert_array_equal(task["model"][name], model[name])
        updates = {s: local_update(s, model, rnd) for s in sites}
        total = sum(EXAMPLES.values())
        model = {k: sum(EXAMPLES[s] * updates[s][k] for s in sites) / total for k in model}
        got = channel.rounds[rnd]
        assert got["round"] == rnd and got["sites"] == sites
        want_loss = sum(EXAMPLES[s] * (LOSS[s] + rnd) for s in sites) / total  # site-c weighs 0
        assert got["metrics"] == {"loss": pytest.approx(want_loss, rel=1e-12)}
    assert len(channel.tasks) == 3 and len(channel.rounds) == 3
    final = load_file(str(tmp_path / "workspace" / "FL_global_model.safetensors"))
    assert set(final) == {"w", "b"}
    for name in model:
        np.testing.assert_allclose(final[name], model[name], rtol=1e-12, atol=0.0)


def test_fedavg_without_an_initial_model_sends_an_empty_one_first(tmp_path: Path) -> None:
    channel = Sites(tmp_path, fedavg_train)
    FedAvg(context(tmp_path, channel, ["site-a", "site-b"]), num_rounds=1).run()
    assert channel.tasks[0]["model"] == {}
    final = load_file(str(tmp_path / "workspace" / "FL_global_model.safetensors"))
    want = (3 * (0.5 * 0.0 + 1.0) + 7 * (1.5 * 0.0 - 2.0)) / 10
    np.testing.assert_allclose(final["w"], np.full((2, 3), want), rtol=1e-12)


def test_fedavg_fails_a_round_in_which_no_site_trained_on_anything(tmp_path: Path) -> None:
    channel = Sites(tmp_path, fedavg_train)
    with pytest.raises(RoundFailed, match="num_examples 0"):
        FedAvg(context(tmp_path, channel, ["site-c"]), num_rounds=1).run()


def test_fedavg_names_the_site_whose_update_does_not_fit(tmp_path: Path) -> None:
    def train(site: str, model: Params, task: dict[str, Any]) -> tuple[Params, int, dict[str, float]]:
        shape = (2,) if site == "site-b" else (3,)
        return {"w": np.zeros(shape)}, 1, {}

    with pytest.raises(BadUpdate) as err:
        FedAvg(context(tmp_path, Sites(tmp_path, train), ["site-a", "site-b"]), num_rounds=1).run()
    assert err.value.site == "site-b" and "site-a" in str(err.value)


@pytest.mark.parametrize("num_rounds", [0, -1])
def test_fedavg_needs_a_round(tmp_path: Path, num_rounds: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FedAvg(context(tmp_path, Sites(tmp_path, fedavg_train), ["site-a"]), num_rounds=num_rounds)


def cyclic_train(site: str, model: Params, task: dict[str, Any]) -> tuple[Params, int, dict[str, float]]:
    return local_update(site, model, task["round"]), 1, {"loss": LOSS[site] * (task["round"] + 1)}


@pytest.mark.parametrize(("order", "seed"), [("fixed", 0), ("random", 0), ("random", 7)])
def test_cyclic_passes_the_model_from_site_to_site(tmp_path: Path, order: str, seed: int) -> None:
    sites = ["site-c", "site-a", "site-b"]  # not sorted: "fixed" sorts them by name
    channel = Sites(tmp_path, cyclic_train)
    Cyclic(context(tmp_path, channel, sites), num_rounds=3, order=order, seed=seed).run()

    shuffler = random.Random(seed)  # "random" reshuffles the sorted sites every cycle with seed
    model: Params = {}
    visits = []
    for rnd in range(3):
        cycle = sorted(sites)
        if order == "random":
            shuffler.shuffle(cycle)
        for site in cycle:
            visits.append((rnd, site))
            model = local_update(site, model, rnd)
        got = channel.rounds[rnd]
        assert got["round"] == rnd and got["sites"] == cycle
        assert got["metrics"] == {"loss": LOSS[cycle[-1]] * (rnd + 1)}  # the cycle's last site's
    assert [(t["round"], t["sites"]) for t in channel.tasks] == [(r, [s]) for r, s in visits]
    assert all(t["total_rounds"] == 3 for t in channel.tasks)
    final = load_file(str(tmp_path / "workspace" / "FL_global_model.safetensors"))
    for name in model:
        np.testing.assert_allclose(final[name], model[name], rtol=1e-12, atol=0.0)


def test_cyclic_fails_a_site_that_sends_back_other_tensors(tmp_path: Path) -> None:
    def train(site: str, model: Params, task: dict[str, Any]) -> tuple[Params, int, dict[str, float]]:
        return ({"w": np.zeros(2)} if site == "site-b" else {"w": np.zeros(3)}), 1, {}

    with pytest.raises(BadUpdate) as err:
        Cyclic(context(tmp_path, Sites(tmp_path, train), ["site-a", "site-b"]), num_rounds=1).run()
    assert err.value.site == "site-b"


@pytest.mark.parametrize(
    ("args", "match"), [({"num_rounds": 0}, "at least 1"), ({"order": "sorted"}, "order")]
)
def test_cyclic_refuses_bad_arguments(tmp_path: Path, args: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cyclic(context(tmp_path, Sites(tmp_path, cyclic_train), ["site-a"]), **args)
