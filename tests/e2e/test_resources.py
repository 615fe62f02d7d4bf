"""Site resources (local/resources.json) and a job's resource_spec, on a real federation.

Declared GPU ids, no real GPU: what is checked is what the scheduler holds and what the
training process is shown (CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.jobs import slow_job
from tests.federation import Federation, start_federation, stop_federation

pytestmark = pytest.mark.e2e

GPU_CLIENT = """
import os, time
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
print("visible:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    time.sleep({delay})
    params = model.params or {{"w": __import__("numpy").zeros(2)}}
    flare.send(FLModel(params=params, metrics={{"loss": 1.0}}, num_examples=1))
"""


def gpu_job(dest: Path, spec: dict[str, object], rounds: int, delay: float = 0.05) -> Path:
    slow_job(dest, rounds=rounds, delay=delay, meta={"resource_spec": spec})
    (dest / "app" / "custom" / "client.py").write_text(GPU_CLIENT.format(delay=delay))
    return dest


def status(fed: Federation, job_id: str) -> dict[str, object]:
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    data: dict[str, object] = doc["data"]
    return data


def wait_for(fed: Federation, job_id: str, check: object, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        meta = status(fed, job_id)
        if check(meta):  # type: ignore[operator]
            return meta
        assert time.monotonic() < deadline, meta
        time.sleep(0.2)


def site_log(fed: Federation, site: str, job_id: str) -> str:
    return (fed.kits / site / "workspace" / "jobs" / job_id / "log.txt").read_text()


def test_jobs_wait_for_declared_resources_and_see_only_their_gpus(tmp_path: Path) -> None:
    fed = start_federation(
        tmp_path / "home",
        site_local={
            "site-1": {"resources.json": {"gpus": [0, 1]}},
            "site-2": {"resources.json": {"max_jobs": 1}},
        },
    )
    try:
        code, doc = fed.cli.json(
            "job", "submit", "-j", gpu_job(tmp_path / "a", {"site-1": {"num_gpus": 2}}, 100000)
        )
        assert code == 0, doc
        first = doc["data"]["job_id"]
        wait_for(fed, first, lambda m: m["status"] == "RUNNING")

        code, doc = fed.cli.json(
            "job", "submit", "-j", gpu_job(tmp_path / "b", {"site-1": {"num_gpus": 1}}, 2)
        )
        assert code == 0, doc
        second = doc["data"]["job_id"]
        meta = wait_for(fed, second, lambda m: "waiting for resources" in str(m.get("status_reason")))
        assert meta["status"] == "SUBMITTED"
        assert meta["status_reason"] == (
            f"waiting for resources: site-1 needs 1 GPU: 0 of 2 GPUs free (held by jobs {first}); "
            f"site-2 runs 1 job(s) of at most 1 (jobs {first})"
        )

        # asking more than a site has at all, or of a site that is not there: refused at submit
        refused: tuple[tuple[dict[str, object], str], ...] = (
            ({"site-1": {"num_gpus": 3}}, "asks for 3 GPUs but the site has 2 GPUs"),
            ({"site-2": {"num_gpus": 1}}, "the site has 0 GPUs"),
            ({"site-9": {"num_gpus": 1}}, "'site-9', which is not a site here"),
        )
        for i, (spec, words) in enumerate(refused):
            code, doc = fed.cli.json("job", "submit", "-j", gpu_job(tmp_path / f"c{i}", spec, 1))
            assert code == 1 and doc["error_code"] == "RESOURCES_UNSATISFIABLE", doc
            assert words in doc["message"], doc
        code, doc = fed.cli.json(
            "job", "submit", "-j", gpu_job(tmp_path / "d", {"site-1": {"num_gpu": 1}}, 1)
        )
        assert code == 1 and doc["error_code"] == "JOB_META_INVALID" and "num_gpu" in doc["message"], doc

        # the first job ends (aborted): what it held comes back and the second starts
        code, doc = fed.cli.json("job", "abort", first, "--force")
        assert code == 0, doc
        code, doc = fed.cli.json("job", "wait", second, "--timeout", "60")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        assert "visible: '0,1'" in site_log(fed, "site-1", first)
        assert "visible: '0'" in site_log(fed, "site-1", second)
        assert "visible: None" in site_log(fed, "site-2", second)  # declares no GPUs: left alone
    finally:
        stop_federation(fed)
