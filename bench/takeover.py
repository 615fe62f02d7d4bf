"""A replica killed to its job's next round started on another replica (decisions/0041).

Two replicas share a throwaway PostgreSQL and a moto bucket behind HAProxy (tests/replicas.py)
with two sites. A FedAvg job of a tiny model runs; the replica holding its lease is SIGKILLed a
few rounds in, three times (the killed one is started again each time, so the job moves back and
forth). Timed from the kill: until the other replica's workflow has the job's checkpoint back
(the next round's task goes out right after), and until that next round has ended. What it
includes: HAProxy marking the replica down and the sites reconnecting through it, the lease
lapsing (``SHOAL_LEASE_TTL``, 3 s) and being noticed (``SHOAL_LEASE_RENEW``, 1 s), the job's
archive read from the bucket and extracted, the checkpoint's model read from the bucket, the
controller's start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.federation import BENCH, BenchFederation
from bench.restart import PACED_CLIENT, resume_delays, rounds_per_life


def _rounds_done(fed: Any, store: Any, job_id: str) -> int:
    """Rounds the job's current holder has run (live progress is the holder's: asked directly)."""
    lease = store.lease_of(int(job_id))
    if lease is None or lease.replica not in fed.ports or lease.replica not in fed.servers:
        return 0
    code, doc = fed.cli.json("job", "meta", job_id, "--startup-kit", fed.direct_kit(lease.replica))
    if code != 0:
        return 0
    return int(((doc["data"].get("progress") or {}).get("stats") or {}).get("rounds_done") or 0)


def takeover(_: BenchFederation, quick: bool) -> list[Any]:
    from tests.pgserver import PostgresServer
    from tests.replicas import replica_federation
    from tests.s3server import s3_server

    from bench.workloads import Figure
    from shoal.store.postgres import PostgresJobStore

    kills = 1 if quick else 3
    pg = PostgresServer()
    try:
        with s3_server() as s3, tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
            env = {"SHOAL_STORE_URL": pg.new_database(), **s3.env(s3.new_bucket())}
            with replica_federation(Path(tmp), env) as fed:
                job = Path(tmp) / "paced"
                shutil.copytree(BENCH / "jobs" / "trivial", job)
                (job / "app" / "custom" / "client.py").write_text(PACED_CLIENT)
                cfg = {"workflow": "fedavg", "args": {"num_rounds": rounds_per_life(quick) * (kills + 1)}}
                (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(cfg))
                code, doc = fed.cli.json("job", "submit", "-j", job)
                if code != 0:
                    raise RuntimeError(f"submit failed: {doc}")
                job_id = str(doc["data"]["job_id"])
                store = PostgresJobStore(env["SHOAL_STORE_URL"])
                kill_times = []
                try:
                    for _kill in range(kills):
                        deadline = time.monotonic() + 120
                        while _rounds_done(fed, store, job_id) < 3:  # a few rounds into this holder's run
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"job {job_id} made no progress after a takeover")
                            time.sleep(0.05)
                        lease = store.lease_of(int(job_id))
                        if lease is None:
                            raise RuntimeError(f"job {job_id} has no lease while it runs")
                        proc = fed.servers.pop(lease.replica)
                        kill_times.append(time.time())
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=30)
                        deadline = time.monotonic() + 60
                        while (taken := store.lease_of(int(job_id))) is None or taken.epoch == lease.epoch:
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"job {job_id} was not taken over")
                            time.sleep(0.05)
                        # back, for the next kill to land on: once the sites follow the job's new
                        # holder (a replica back at once would take new connections first)
                        while _rounds_done(fed, store, job_id) < 1:
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"job {job_id} made no progress after a takeover")
                            time.sleep(0.05)
                        fed.start_replica(lease.replica)
                finally:
                    store.close()
                code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "300")
                if code != 0:
                    raise RuntimeError(f"the job did not finish: {doc}")
                code, doc = fed.cli.json("job", "download", job_id, "-o", Path(tmp) / "result")
                if code != 0:
                    raise RuntimeError(f"download failed: {doc}")
                summary = json.loads(
                    (Path(tmp) / "result" / job_id / "workspace" / "metrics_summary.json").read_text()
                )
    finally:
        pg.stop()
    resumed, next_round = resume_delays(summary, kill_times)
    note = "2 replicas, HAProxy, PostgreSQL, moto bucket, 2 sites, tiny model; lease 3 s; target < 5 s"
    return [
        Figure("replica takeover", "SIGKILL -> job's workflow back on the other replica", resumed, "s", note),
        Figure("replica takeover", "SIGKILL -> its next round ended there", next_round, "s", note),
    ]
