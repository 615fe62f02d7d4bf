"""FedAvg's and cyclic's arithmetic, against references computed here from their definitions.

The workflows run in this process against ``Sites``, the server's end of the job channel played
in memory: each task is answered at once by every site it names, with an update computed by a
function of the test. The e2e tests run the same workflows on a real federation; these pin the
numbers (weights, rounds, order, metrics) tightly enough that a changed operator shows.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.fl.model import FLModel
from shoal.wire.channel import SyncChannel
from shoal.wire.models import load_params, save_params
from shoal.workflows.base import BadUpdate, RoundFailed, WorkflowContext
from shoal.workflows.cyclic import Cyclic
from shoal.workflows.fedavg import FedAvg

Params = dict[str, np.ndarray]
#: A site that never answers its task (a round deadline must end the wait).
SILENT = "silent"
#: A site's answer to a task: an FLModel, None for a site that fails it (``site_failed``), or
#: SILENT.
Train = Callable[[str, Params, dict[str, Any]], FLModel | None | str]


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
        if message["op"] == "release":  # a result folded in: the server removes its file
            Path(message["path"]).unlink()
            return
        if message["op"] != "task":  # notices for the server alone (task_closed): nothing to answer
            return
        model = load_params(Path(message["model_path"]))
        self.tasks.append({**message, "model": model})
        for site in message["sites"]:
            update = self.train(site, model, message)
            if update == SILENT:
                continue
            if update is None:
                self.inbox.append({"op": "site_failed", "site": site, "reason": f"{site} gave up"})
                continue
            path = self.run_dir / f"{message['task_id']}-{site}.safetensors"
            assert isinstance(update, FLModel)
            save_params(update.params, path)
            self.inbox.append(
                {
                    "op": "result",
                    "task_id": message["task_id"],
                    "site": site,
                    "path": str(path),
                    "num_examples": update.num_examples,
                    "metrics": update.metrics,
                    "meta": update.meta,
                }
            )

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.inbox:
            return self.inbox.popleft()
        raise TimeoutError


def context(tmp_path: Path, channel: Sites, sites: list[str]) -> WorkflowContext:
    (tmp_path / "workspace").mkdir(parents=True)
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


def fedavg_train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
    metrics = {"loss": LOSS[site] + task["round"]}
    return FLModel(
        params=local_update(site, model, task["round"]), metrics=metrics, num_examples=EXAMPLES[site]
    )


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
        model = {k: np.asarray(sum(EXAMPLES[s] * updates[s][k] for s in sites) / total) for k in model}
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
    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
        shape = (2,) if site == "site-b" else (3,)
        return FLModel(params={"w": np.zeros(shape)})

    with pytest.raises(BadUpdate) as err:
        FedAvg(context(tmp_path, Sites(tmp_path, train), ["site-a", "site-b"]), num_rounds=1).run()
    assert err.value.site == "site-b" and "site-a" in str(err.value)


@pytest.mark.parametrize("num_rounds", [0, -1])
def test_fedavg_needs_a_round(tmp_path: Path, num_rounds: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FedAvg(context(tmp_path, Sites(tmp_path, fedavg_train), ["site-a"]), num_rounds=num_rounds)


def cyclic_train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
    return FLModel(
        params=local_update(site, model, task["round"]), metrics={"loss": LOSS[site] * (task["round"] + 1)}
    )


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
    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
        return FLModel(params={"w": np.zeros(2)} if site == "site-b" else {"w": np.zeros(3)})

    with pytest.raises(BadUpdate) as err:
        Cyclic(context(tmp_path, Sites(tmp_path, train), ["site-a", "site-b"]), num_rounds=1).run()
    assert err.value.site == "site-b"
    assert str(err.value).endswith("tensor 'w' has shape (2,), expected (3,) (as in the model it was sent)")


@pytest.mark.parametrize(
    ("args", "match"),
    [({"num_rounds": 0}, "^num_rounds must be at least 1$"), ({"order": "sorted"}, "order")],
)
def test_cyclic_refuses_bad_arguments(tmp_path: Path, args: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cyclic(context(tmp_path, Sites(tmp_path, cyclic_train), ["site-a"]), **args)


# --- what the first mutation runs left alive (docs/mutation.md) -------------------------------


def test_fedavg_keeps_each_sites_last_update_when_asked(tmp_path: Path) -> None:
    """``train(keep_last=True)``, which cross-site evaluation uses: each site's update of the
    last round, whole (tensors, metrics, examples), and nothing of earlier rounds."""
    sites = ["site-a", "site-b"]
    channel = Sites(tmp_path, fedavg_train)
    model, last = FedAvg(context(tmp_path, channel, sites), num_rounds=2).train(
        FLModel(params={}), keep_last=True
    )
    assert sorted(last) == sites
    start = channel.tasks[1]["model"]
    for site in sites:
        want = local_update(site, start, 1)
        assert set(last[site].params) == set(want)
        for name in want:
            np.testing.assert_array_equal(np.asarray(last[site].params[name]), want[name])
        assert last[site].metrics == {"loss": LOSS[site] + 1} and last[site].num_examples == EXAMPLES[site]
    _, none = FedAvg(context(tmp_path / "again", Sites(tmp_path, fedavg_train), sites), num_rounds=2).train(
        FLModel(params={})
    )
    assert none == {}


def test_fedavg_defaults_to_one_train_round_and_writes_its_summary(tmp_path: Path) -> None:
    channel = Sites(tmp_path, fedavg_train)
    FedAvg(context(tmp_path, channel, ["site-a"])).run()
    assert [(t["task_name"], t["round"], t["total_rounds"]) for t in channel.tasks] == [("train", 0, 1)]
    summary = json.loads((tmp_path / "workspace" / "metrics_summary.json").read_text())
    assert summary["workflow"] == "fedavg" and summary["num_rounds"] == 1
    assert [r["round"] for r in summary["rounds"]] == [0]


def test_fedavg_leaves_out_a_site_without_examples_wherever_it_answers(tmp_path: Path) -> None:
    sites = ["site-c", "site-a", "site-b"]  # site-c (no examples) answers first
    channel = Sites(tmp_path, fedavg_train)
    FedAvg(context(tmp_path, channel, sites), num_rounds=1).run()
    updates = {s: local_update(s, {}, 0) for s in ("site-a", "site-b")}
    want = (3 * updates["site-a"]["w"] + 7 * updates["site-b"]["w"]) / 10
    final = load_file(str(tmp_path / "workspace" / "FL_global_model.safetensors"))
    np.testing.assert_allclose(final["w"], want, rtol=1e-12)
    assert channel.rounds[0]["sites"] == sorted(sites)  # it answered: listed, but not summed


def test_fedavg_names_a_first_update_that_cannot_be_averaged(tmp_path: Path) -> None:
    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
        return FLModel(params={"flags": np.array([True, False])})

    with pytest.raises(BadUpdate) as err:
        FedAvg(context(tmp_path, Sites(tmp_path, train), ["site-a"]), num_rounds=1).run()
    assert err.value.site == "site-a"
    assert str(err.value).endswith("tensor 'flags' is bool, which cannot be averaged (only numbers can)")


def test_fedavg_mismatch_message_names_the_first_site(tmp_path: Path) -> None:
    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
        return FLModel(params={"w": np.zeros(2 if site == "site-b" else 3)})

    with pytest.raises(BadUpdate) as err:
        FedAvg(context(tmp_path, Sites(tmp_path, train), ["site-a", "site-b"]), num_rounds=1).run()
    assert str(err.value).endswith(
        "tensor 'w' has shape (2,), expected (3,) (the round's first update came from site-a)"
    )


def test_cyclic_starts_from_the_initial_model_and_writes_its_summary(tmp_path: Path) -> None:
    channel = Sites(tmp_path, cyclic_train)
    ctx = context(tmp_path, channel, ["site-a", "site-b"])
    initial = {"w": np.full((2, 3), 4.0), "b": np.ones(3)}
    save_params(initial, tmp_path / "app" / "init.safetensors")
    flow = Cyclic(ctx, initial_model="init.safetensors", round_timeout=7)
    assert flow.round_timeout == 7.0  # the base class's arguments reach it
    flow.run()
    assert [(t["task_name"], t["round"], t["total_rounds"]) for t in channel.tasks] == [
        ("train", 0, 1),
        ("train", 0, 1),
    ]
    for name in initial:
        np.testing.assert_array_equal(channel.tasks[0]["model"][name], initial[name])
    want = local_update("site-b", local_update("site-a", initial, 0), 0)
    final = load_file(str(tmp_path / "workspace" / "FL_global_model.safetensors"))
    np.testing.assert_allclose(final["w"], want["w"], rtol=1e-12)
    summary = json.loads((tmp_path / "workspace" / "metrics_summary.json").read_text())
    assert summary["workflow"] == "cyclic" and summary["num_rounds"] == 1


def test_cyclic_random_order_defaults_to_seed_0(tmp_path: Path) -> None:
    sites = [f"site-{c}" for c in "abcdefgh"]

    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel:
        return FLModel(params={"w": np.zeros(1)})

    orders = []
    seeds: list[tuple[str, dict[str, Any]]] = [("default", {}), ("zero", {"seed": 0})]
    for name, seed in seeds:
        channel = Sites(tmp_path, train)
        Cyclic(context(tmp_path / name, channel, sites), num_rounds=2, order="random", **seed).run()
        orders.append([t["sites"][0] for t in channel.tasks])
    assert orders[0] == orders[1] and orders[0][:8] != sorted(sites)


def test_cyclic_skips_a_site_that_dropped_out_and_goes_on(tmp_path: Path) -> None:
    """site-a fails its first visit: the cycle goes on to the others, and the next cycle skips
    it (it is no longer active) instead of stopping there."""

    def train(site: str, model: Params, task: dict[str, Any]) -> FLModel | None:
        return None if site == "site-a" else cyclic_train(site, model, task)

    channel = Sites(tmp_path, train)
    Cyclic(context(tmp_path, channel, ["site-a", "site-b", "site-c"]), num_rounds=2).run()
    assert [r["sites"] for r in channel.rounds] == [["site-b", "site-c"], ["site-b", "site-c"]]
    assert [t["sites"] for t in channel.tasks] == [["site-a"], ["site-b"], ["site-c"], ["site-b"], ["site-c"]]


def test_cyclic_fails_when_no_site_takes_the_model(tmp_path: Path) -> None:
    with pytest.raises(RoundFailed, match="cycle 0: no site took the model"):
        Cyclic(context(tmp_path, Sites(tmp_path, lambda *_: None), ["site-a", "site-b"])).run()
