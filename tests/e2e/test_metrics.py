"""Metrics a training script logs with ``log_metric`` reach metrics_summary.json, on a POC and
in the simulator alike, beside each round's aggregated metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job

pytestmark = pytest.mark.e2e


def check_summary(summary: dict[str, Any], sites: list[str], rounds: int) -> None:
    logged = summary["logged_metrics"]
    assert isinstance(logged, dict) and sorted(logged) == sites
    for site in sites:
        assert [(m["key"], m["value"], m["step"]) for m in logged[site]] == [
            ("step_loss", 0.5, r) for r in range(rounds)
        ]
        assert [m["round"] for m in logged[site]] == list(range(rounds))
    assert [r["metrics"] for r in summary["rounds"]] == [{"loss": 1.0}] * rounds


def test_logged_metrics_in_the_summary(federation: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=3, delay=0.0)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_id = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    assert code == 0, doc
    check_summary(
        json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text()), ["site-1", "site-2"], 3
    )

    code, doc = Cli(home=tmp_path / "home").json("simulate", "-j", job, "-n", "3", "-o", tmp_path / "sim")
    assert code == 0, doc
    summary = json.loads(Path(doc["data"]["metrics_summary"]).read_text())
    check_summary(summary, ["site-1", "site-2", "site-3"], 3)


def test_logged_metrics_reach_monitor_live(federation: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=15, delay=0.05)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    proc = federation.cli.run(
        "job",
        "monitor",
        job_id,
        "--format",
        "jsonl",
        "--metric",
        "step_loss",
        "--stats-target",
        "all",
        "--timeout",
        "120",
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    live = [e for e in events if not e["terminal"] and "site-1.step_loss" in (e.get("metrics") or {})]
    assert live and live[0]["metrics"]["site-1.step_loss"] == 0.5, events


LATE_METRICS_CLIENT = """
import time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.send(FLModel(params={"w": np.zeros(2)}, metrics={"loss": 1.0}, num_examples=1))
    if model.current_round == model.total_rounds - 1:  # its last result is sent: the round ends
        time.sleep(0.3)
        flare.log_metric("after_last_result", 1.0, step=model.current_round)
time.sleep(0.3)  # told to stop: a final evaluation, say
flare.log_metric("final_eval", 0.9)
"""


def test_metrics_logged_after_the_last_result_are_in_the_summary(
    federation: Federation, tmp_path: Path
) -> None:
    """The workflow writes its summary once every site ended its part (decisions/0053): what a
    script logs after its last result, even after it was told to stop, is not lost to a race."""
    job = slow_job(tmp_path / "job", rounds=2, delay=0.0)
    (job / "app" / "custom" / "client.py").write_text(LATE_METRICS_CLIENT)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    code, doc = federation.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "dl")
    assert code == 0, doc
    summary = json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())
    for site in ("site-1", "site-2"):
        logged = [(m["key"], m["value"]) for m in summary["logged_metrics"][site]]
        assert logged == [("after_last_result", 1.0), ("final_eval", 0.9)], (site, logged)


DIVERGING_CLIENT = """
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.log_metric("grad_norm", float("inf"), step=model.current_round)
    flare.send(FLModel(params={"w": np.zeros(2)}, metrics={"loss": float("nan")}, num_examples=1))
"""


def _strict(raw: str) -> object:
    """Parse as JavaScript or Go would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def test_a_diverged_loss_still_gives_strict_json(federation: Federation, tmp_path: Path) -> None:
    """NaN and infinite metrics come out as null in envelopes, API answers and metrics files."""
    job = slow_job(tmp_path / "job", rounds=2, delay=0.0)
    (job / "app" / "custom" / "client.py").write_text(DIVERGING_CLIENT)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    meta = federation.cli.run("job", "meta", job_id, "--format", "json")
    progress = _strict(meta.stdout)["data"]["progress"]  # type: ignore[index]
    assert progress["last_metrics"] == {"loss": None}, progress
    code, doc = federation.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    assert code == 0, doc
    summary = _strict(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())
    assert [r["metrics"] for r in summary["rounds"]] == [{"loss": None}] * 2  # type: ignore[index]
    assert {m["value"] for m in summary["logged_metrics"]["site-1"]} == {None}  # type: ignore[index]
