"""What a site on another replica costs a round: its tasks and results relayed (decisions/0048).

Two replicas share a throwaway PostgreSQL and a moto bucket behind HAProxy (tests/replicas.py).
First site-2 dials replica B itself while site-1 sits on A: the job runs on one of them and the
other's site is reached through the store (a ``site_mail`` row per message, the model and the
result as relay blobs in the bucket). Then site-2's agent is started again behind HAProxy, so
both sites sit on A, and the same job runs again. Figures: seconds per round (from the rounds'
end times in the job's summary, the first round left out: it includes the deploy).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.federation import BENCH, BenchFederation


def _round_seconds(fed: Any, job: Path, out: Path) -> list[float]:
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "600")
    if code != 0 or doc["data"]["status"] != "FINISHED_OK":
        raise RuntimeError(f"the job did not finish: {doc}")
    job_id = str(doc["data"]["job_id"])
    code, doc = fed.cli.json("job", "download", job_id, "-o", out)
    if code != 0:
        raise RuntimeError(f"download failed: {doc}")
    summary = json.loads((out / job_id / "workspace" / "metrics_summary.json").read_text())
    ends = [float(r["time"]) for r in summary["rounds"]]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _wait_for(fed: Any, placed: dict[str, str]) -> None:
    """Until ``system status`` (through HAProxy) lists the sites on those replicas."""
    deadline = time.monotonic() + 60
    while True:
        code, doc = fed.cli.json("system", "status")
        seen = {r["name"]: r.get("replica") for r in doc["data"]["sites"]} if code == 0 else {}
        if seen == placed:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sites never sat as {placed}: {seen}")
        time.sleep(0.2)


def relay(_: BenchFederation, quick: bool) -> list[Any]:
    from tests.pgserver import PostgresServer
    from tests.replicas import replica_federation
    from tests.s3server import s3_server

    from bench.workloads import Figure

    mb, rounds = (1, 3) if quick else (10, 8)
    pg = PostgresServer()
    try:
        with s3_server() as s3, tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
            env = {"SHOAL_STORE_URL": pg.new_database(), **s3.env(s3.new_bucket())}
            with replica_federation(Path(tmp), env, dial={"site-2": "replica-b"}) as fed:
                job = Path(tmp) / "big"
                shutil.copytree(BENCH / "jobs" / "big", job)
                client = {"script": "client.py", "args": f"--mb {mb}"}
                (job / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client))
                server = {"workflow": "fedavg", "args": {"num_rounds": rounds}}
                (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
                _wait_for(fed, {"site-1": "replica-a", "site-2": "replica-b"})
                split = _round_seconds(fed, job, Path(tmp) / "split")
                fed.start_site("site-2", fed.kits / "site-2")  # behind HAProxy: on A, with site-1
                _wait_for(fed, {"site-1": "replica-a", "site-2": "replica-a"})
                together = _round_seconds(fed, job, Path(tmp) / "together")
    finally:
        pg.stop()
    note = f"2 replicas, HAProxy, PostgreSQL, moto bucket, 2 sites, {mb} MB model, {rounds} rounds"
    return [
        Figure("relay", f"{mb} MB round, both sites on the job's replica", together, "s", note),
        Figure("relay", f"{mb} MB round, one site on the other replica (relayed)", split, "s", note),
    ]
