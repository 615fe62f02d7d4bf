"""A burst of submits, as a hyperparameter sweep makes one: N distinct jobs from S concurrent
SDK submitters (each a script holding one connection), then every job run to its end.

Figures: submits accepted per second (first submit sent to last acknowledgement); seconds until
all have ended; whether they started in the order the server acknowledged them; the most that
ran at once. Each acknowledgement means the job is committed (the store fsyncs before the
server answers), so this is the rate of durable accepts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.federation import BENCH, BenchFederation

if TYPE_CHECKING:
    from shoal.api.answers import JobMeta


@dataclass
class BurstResult:
    accepted_per_s: float
    all_ended_s: float
    statuses: dict[str, int]
    in_order: bool
    most_at_once: int
    errors: list[str] = field(default_factory=list)


def _archives(folder: Path, jobs: int) -> list[Path]:
    """``jobs`` distinct archives of the trivial job (each its own name, as a sweep's differ)."""
    from shoal.wire.archive import zip_folder

    out = []
    for i in range(jobs):
        job = folder / f"sweep-{i}"
        shutil.copytree(BENCH / "jobs" / "trivial", job)
        meta = json.loads((job / "meta.json").read_text())
        (job / "meta.json").write_text(json.dumps({**meta, "name": f"sweep-{i}"}))
        archive = folder / f"sweep-{i}.zip"
        zip_folder(job, archive)
        out.append(archive)
    return out


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) spans that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def run_burst(fed: BenchFederation, jobs: int, submitters: int, timeout: float = 900.0) -> BurstResult:
    from shoal.errors import ShoalError

    with tempfile.TemporaryDirectory(prefix="shoal-burst-") as tmp:
        archives = _archives(Path(tmp), jobs)
        queue = list(enumerate(archives))
        lock = threading.Lock()
        acked: list[tuple[float, str]] = []
        errors: list[str] = []

        def submitter() -> None:
            with fed.admin_client() as client:
                while True:
                    with lock:
                        if not queue:
                            return
                        _, archive = queue.pop(0)
                    try:
                        job_id = str(client.submit_job(archive, "default")["job_id"])
                    except ShoalError as exc:
                        with lock:
                            errors.append(exc.code)
                        continue
                    with lock:
                        acked.append((time.perf_counter(), job_id))

        threads = [threading.Thread(target=submitter) for _ in range(submitters)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted_s = max(t for t, _ in acked) - start if acked else float("inf")
    metas = _wait_all(fed, [job_id for _, job_id in acked], timeout)
    ended = time.perf_counter() - start
    by_submit = sorted(metas, key=lambda m: float(m["submit_time"]))
    started = [m for m in by_submit if m.get("start_time")]
    starts = [_ts(m["start_time"]) for m in started]
    statuses: dict[str, int] = {}
    for m in metas:
        statuses[m["status"]] = statuses.get(m["status"], 0) + 1
    return BurstResult(
        accepted_per_s=len(acked) / accepted_s,
        all_ended_s=ended,
        statuses=statuses,
        in_order=starts == sorted(starts),
        most_at_once=most_at_once(
            [(_ts(m["start_time"]), _ts(m["end_time"])) for m in started if m.get("end_time")]
        ),
        errors=errors,
    )


def _wait_all(fed: BenchFederation, job_ids: list[str], timeout: float) -> list[JobMeta]:
    """Every job's meta once it has ended (one kept connection, long polls in turn)."""
    metas = []
    deadline = time.monotonic() + timeout
    with fed.admin_client() as client:
        for job_id in job_ids:
            done, meta = client.wait_job(job_id, "default", timeout=max(1.0, deadline - time.monotonic()))
            if not done:
                raise RuntimeError(f"job {job_id} did not end within {timeout:.0f}s: {meta['status']}")
            metas.append(meta)
    return metas
