"""The trackers with their real libraries (a SQLite MLflow store, tensorboardX event files)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shoal.scheduler import tracking
from shoal.scheduler.tracking import (
    JobTracking,
    MlflowTracker,
    RunInfo,
    TensorBoardTracker,
    Tracker,
    mlflow_name,
)

#: Keys a site's script may log (any string up to METRIC_KEY_MAX) that MLflow would refuse as they are.
HOSTILE_KEYS = ["loss", "train/acc", "bad key!?", "../../etc", "a//b/./c", "x" * 200, "/", "é"]


def test_mlflow_names_are_what_mlflow_takes() -> None:
    assert mlflow_name("site-1/train/acc") == "site-1/train/acc"
    assert mlflow_name("site-1/bad key!?") == "site-1/bad key__"
    assert mlflow_name("site-1/../../etc") == "site-1/etc"
    assert mlflow_name("..") == "_"
    assert len(mlflow_name("s/" + "x" * 300)) == 250


def test_odd_keys_reach_both_trackers_and_nothing_is_noticed(tmp_path: Path) -> None:
    """One run holds every key (MLflow under its safe name); no tracker is stopped."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    notices: list[str] = []

    async def run() -> None:
        trackers: list[Tracker] = [TensorBoardTracker(tmp_path / "tb"), MlflowTracker(uri)]
        tracking = JobTracking(RunInfo(7, "odd-keys", "default"), trackers, notices.append)
        for step in range(2):
            for i, key in enumerate(HOSTILE_KEYS):
                tracking.log(f"site-1/{key}", float(i + step), step)
        await tracking.close()

    asyncio.run(run())
    assert notices == []
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("odd-keys")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.data.tags["shoal.job_id"] == "7"
    assert sorted(found.data.metrics) == sorted({mlflow_name(f"site-1/{k}") for k in HOSTILE_KEYS})
    history = client.get_metric_history(found.info.run_id, "site-1/bad key__")
    assert sorted((m.step, m.value) for m in history) == [(0, 2.0), (1, 3.0)]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]  # tensorboardX cleans odd tags its own way
    assert len(tags) == len(HOSTILE_KEYS) and "site-1/train/acc" in tags
    assert [(s.step, s.value) for s in events.Scalars("site-1/loss")] == [(0, 0.0), (1, 1.0)]


def test_a_script_that_logs_faster_than_the_trackers_write_is_bounded(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Points past QUEUE_MAX waiting are dropped with one notice, not kept in the server's memory."""
    monkeypatch.setattr(tracking, "QUEUE_MAX", 5)
    notices: list[str] = []

    async def run() -> None:
        job = JobTracking(
            RunInfo(8, "flood", "default"), [TensorBoardTracker(tmp_path / "tb")], notices.append
        )
        for step in range(20_000):  # no await: the event loop never lets go, as a flood would not
            job.log("site-1/loss", 1.0, step)
        await job.close()

    asyncio.run(run())
    assert len(notices) == 1 and "fell 5 points behind" in notices[0], notices
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert 0 < len(events.Scalars("site-1/loss")) < 20_000
