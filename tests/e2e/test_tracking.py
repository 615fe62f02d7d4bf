"""Experiment trackers written centrally by the server (docs/observability.md): read back with
the trackers' own readers, value for value against what the scripts logged, and a tracker that
fails never fails the job."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.federation import own_federation

pytestmark = pytest.mark.e2e

SITES = ["site-1", "site-2"]


def run_job(
    fed: Federation, tmp_path: Path, trackers: list[str], rounds: int = 3
) -> tuple[str, dict[str, Any], Path]:
    """Submit a job that logs ``step_loss`` every round, wait, download it: (id, meta, folder)."""
    job = slow_job(tmp_path / "job", rounds=rounds, delay=0.0, meta={"trackers": trackers})
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_id = doc["data"]["job_id"]
    code, meta = fed.cli.json("job", "meta", job_id)
    assert code == 0, meta
    code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    assert code == 0, doc
    return job_id, meta["data"], Path(doc["data"]["artifacts"]["metrics_summary"])


def expected(summary: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """What the trackers must hold: every logged value by ``<site>/<key>`` with its round as the
    step, and each round's aggregate as ``global/<key>``."""
    series: dict[str, list[tuple[int, float]]] = {}
    for site, points in summary["logged_metrics"].items():
        for p in points:
            series.setdefault(f"{site}/{p['key']}", []).append((p["round"], p["value"]))
    for r in summary["rounds"]:
        for key, value in r["metrics"].items():
            series.setdefault(f"global/{key}", []).append((r["round"], value))
    return series


def tensorboard_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_series(uri: str, job_id: str) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    client = MlflowClient(tracking_uri=uri)
    runs = [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id], f"tags.`shoal.job_id` = '{job_id}'")
    ]
    assert len(runs) == 1, runs
    run = runs[0]
    series = {
        key: [
            (m.step, m.value)
            for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        ]
        for key in run.data.metrics
    }
    return series, dict(run.data.tags)


def wandb_records(run_file: Path) -> Iterator[Any]:
    """The records of a W&B run file (``run-<id>.wandb``), decoded with W&B's own protobuf
    messages. The file is a 7-byte header (``:W&B``, a magic, a version), then LevelDB's log
    format: 32 KiB blocks of records, each a CRC, a length, a type (1 whole, 2 first, 3
    middle, 4 last piece) and its bytes; a block's tail too short for a record header is zeros."""
    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B", raw[:16]
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # the block's padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack_from("<HB", raw, pos + 4)
        piece = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # no stubs
            record.ParseFromString(pending)
            yield record


def wandb_series(workspace: Path, job_id: str) -> tuple[dict[str, list[tuple[int, float]]], Any]:
    """Every metric of the job's offline W&B run by name, as (round, value), and its run record."""
    files = list((workspace / "wandb").glob(f"offline-run-*-{job_id}/run-{job_id}.wandb"))
    assert len(files) == 1, list(workspace.rglob("*"))
    series: dict[str, list[tuple[int, float]]] = {}
    runs = []
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            runs.append(record.run)
        elif kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            for key, value in row.items():
                if key != "round" and not key.startswith("_"):
                    series.setdefault(key, []).append((row["round"], value))
    assert len(runs) == 1, runs
    return {key: sorted(points) for key, points in series.items()}, runs[0]


@contextmanager
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback port that records every connection made to it (what each first sent): where
    W&B's API would be, to show that nothing calls it."""
    server = socket.create_server(("127.0.0.1", 0))
    calls: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    calls.append(conn.recv(1024))
                except OSError:
                    calls.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], calls
    finally:
        server.close()
        thread.join(5)


def test_trackers_hold_what_the_scripts_logged(federation: Federation, tmp_path: Path) -> None:
    job_id, meta, summary_path = run_job(federation, tmp_path, ["tensorboard", "mlflow"])
    summary = json.loads(summary_path.read_text())
    want = expected(summary)
    assert sorted(want) == ["global/loss", "site-1/step_loss", "site-2/step_loss"]
    assert want["site-1/step_loss"] == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert not [n for n in meta.get("notices", []) if "tracker" in n], meta

    board = summary_path.parent / "tensorboard"
    assert tensorboard_series(board) == want

    uri = f"sqlite:///{federation.kits / 'server' / 'workspace' / 'mlflow' / 'mlflow.db'}"
    series, tags = mlflow_series(uri, job_id)
    assert series == want
    assert tags["shoal.study"] == "default" and tags["mlflow.runName"] == f"job {job_id}"


def test_wandb_writes_an_offline_run_in_the_workspace_and_calls_no_one(tmp_path: Path) -> None:
    """The server's environment asks W&B to go online, to an API on a port of the test's: the
    run is still written offline, into the job's workspace (downloaded with it), holding every
    value the summary has, and nothing connected to that port."""
    with listener() as (port, calls):
        env = {
            "WANDB_MODE": "online",
            "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
            "WANDB_API_KEY": "x" * 40,
        }
        with own_federation(tmp_path / "fed", env=env) as fed:
            job_id, meta, summary_path = run_job(fed, tmp_path, ["wandb"], rounds=3)
    assert calls == [], calls
    assert not [n for n in meta.get("notices", []) if "tracker" in n], meta
    want = expected(json.loads(summary_path.read_text()))
    assert sorted(want) == ["global/loss", "site-1/step_loss", "site-2/step_loss"]
    series, run = wandb_series(summary_path.parent, job_id)
    assert series == want
    assert run.run_id == job_id and run.display_name == f"job {job_id}" and run.run_group == "default"


def test_a_tracker_whose_library_fails_to_load_never_fails_the_job(tmp_path: Path) -> None:
    """The server finds a ``wandb`` that breaks on import (first on its PYTHONPATH): the job ends
    FINISHED_OK with one notice naming the tracker, and TensorBoard still has every value."""
    broken = tmp_path / "broken"
    (broken / "wandb").mkdir(parents=True)
    (broken / "wandb" / "__init__.py").write_text("raise ImportError('this wandb is broken')\n")
    with own_federation(tmp_path / "fed", env={"PYTHONPATH": str(broken)}) as fed:
        _, meta, summary_path = run_job(fed, tmp_path, ["wandb", "tensorboard"], rounds=2)
    notices = [n for n in meta.get("notices", []) if "tracker wandb failed" in n]
    assert len(notices) == 1 and "this wandb is broken" in notices[0], meta
    want = expected(json.loads(summary_path.read_text()))
    assert want["site-1/step_loss"] == [(0, 0.5), (1, 0.5)]
    assert tensorboard_series(summary_path.parent / "tensorboard") == want


def test_a_job_names_only_known_trackers(federation: Federation, tmp_path: Path) -> None:
    for trackers in (["weights-and-biases"], "tensorboard", ["mlflow", "mlflow"]):
        job = slow_job(tmp_path / str(len(str(trackers))), rounds=1, delay=0.0, meta={"trackers": trackers})
        code, doc = federation.cli.json("job", "submit", "-j", job)
        assert code == 1 and doc["error_code"] == "JOB_META_INVALID", doc


def test_a_failing_tracker_never_fails_the_job(tmp_path: Path) -> None:
    """MLflow's store cannot be opened (its folder is a file): the job still ends FINISHED_OK,
    its notices say why, TensorBoard still gets everything and the summary has every metric."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {"SHOAL_MLFLOW_TRACKING_URI": f"sqlite:///{blocker / 'mlflow.db'}"}
    with own_federation(tmp_path / "fed", env=env) as fed:
        _, meta, summary_path = run_job(fed, tmp_path, ["mlflow", "tensorboard"], rounds=2)
    notices = [n for n in meta.get("notices", []) if "tracker mlflow failed" in n]
    assert len(notices) == 1 and "metrics_summary.json" in notices[0], meta
    want = expected(json.loads(summary_path.read_text()))
    assert want["site-2/step_loss"] == [(0, 0.5), (1, 0.5)]
    assert tensorboard_series(summary_path.parent / "tensorboard") == want


def test_a_site_may_keep_its_metrics(tmp_path: Path) -> None:
    """site-1's policy says ``share_metrics: false``: what its script logs is in site-1's own
    event files, round by round, and nowhere on the server (not its trackers, not the summary);
    site-2's metrics reach the server as ever, and the job's notices say why site-1's do not."""
    policy = {"site-1": {"site_policy.json": {"share_metrics": False}}}
    with own_federation(tmp_path / "fed", site_local=policy) as fed:
        job_id, meta, summary_path = run_job(fed, tmp_path, ["tensorboard"], rounds=3)
        own = fed.kits / "site-1" / "workspace" / "jobs" / job_id / "tensorboard"
        kept = tensorboard_series(own)
    assert kept == {"step_loss": [(0, 0.5), (1, 0.5), (2, 0.5)]}
    summary = json.loads(summary_path.read_text())
    assert sorted(summary["logged_metrics"]) == ["site-2"]
    assert sorted(tensorboard_series(summary_path.parent / "tensorboard")) == [
        "global/loss",
        "site-2/step_loss",
    ]
    assert any(n.startswith("site-1: logged metrics stay on this site") for n in meta["notices"]), meta
