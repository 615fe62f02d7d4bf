"""A large model's job with the server's blobs and job files in an S3-compatible bucket.

moto's server mode (tests/s3server.py, a process of its own on loopback) plays the bucket, as in
the tests; a fresh POC federation is started with ``SHOAL_BLOBS_URL`` pointing at it. Measured:
seconds per round, the job's end (its result uploaded to the bucket before the job says it
ended), a download of the model back out of the bucket, and the server's process tree's peak
RSS over all of it (the bucket's own process is not in it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.federation import BENCH, BenchFederation, federation
from bench.measure import PeakSampler

if TYPE_CHECKING:
    from bench.workloads import Figure


def _rounds_from_bucket(fed: BenchFederation, job_id: str, into: Path) -> list[float]:
    """Round end times from the job's metrics_summary.json, downloaded (the server's disk no
    longer holds it: it is in the bucket)."""
    fed.shoal("job", "download", job_id, "--only", "metrics", "-o", into)
    [summary] = list(into.rglob("metrics_summary.json"))
    return [float(r["time"]) for r in json.loads(summary.read_text())["rounds"]]


def large_model_bucket(quick: bool, model_mb: tuple[int, ...]) -> list[Figure]:
    from tests.s3server import s3_server

    from bench.workloads import QUICK_MODEL_MB, Figure, _end_time, _pids, _submit

    figures = []
    with s3_server() as s3:
        bucket = s3.new_bucket()
        with federation(env=s3.env(bucket), limits={"result_floor_bytes": 4 << 30}) as fed:
            for mb in (QUICK_MODEL_MB,) if quick else model_mb:
                label = f"{mb} MB model, bucket"
                with tempfile.TemporaryDirectory() as tmp:
                    job = Path(tmp) / "big"
                    shutil.copytree(BENCH / "jobs" / "big", job)
                    cfg = job / "app" / "config" / "config_fed_client.json"
                    cfg.write_text(json.dumps({"script": "client.py", "args": f"--mb {mb}"}))
                    with PeakSampler(_pids(fed)) as during_job:
                        job_id = _submit(fed, job)
                        fed.shoal("job", "wait", job_id)
                    times = _rounds_from_bucket(fed, job_id, Path(tmp) / "metrics")
                    meta = fed.shoal_json("job", "meta", job_id)["data"]
                    end_time = _end_time(meta)  # type: ignore[arg-type]
                    with PeakSampler(_pids(fed)) as during_download:
                        t0 = time.perf_counter()
                        fed.shoal("job", "download", job_id, "--only", "model", "-o", Path(tmp) / "model")
                        download = time.perf_counter() - t0
                    [zipped] = list((Path(tmp) / "model").rglob("FL_global_model.safetensors"))
                    assert zipped.stat().st_size > mb * 2**20 * 0.9  # the model came back whole
                figures += [
                    Figure(label, "seconds per round (rounds 2-3)", [(times[-1] - times[0]) / 2], "s"),
                    Figure(
                        label, "last round to job end (result into the bucket)", [end_time - times[-1]], "s"
                    ),
                    Figure(label, "job download --only model (out of the bucket)", [download], "s"),
                    Figure(label, "server tree peak RSS, job", [during_job.peaks["server"] / 2**20], "MiB"),
                    Figure(
                        label,
                        "server tree peak RSS, download",
                        [during_download.peaks["server"] / 2**20],
                        "MiB",
                    ),
                ]
    return figures
