"""Server restart to a resumed job's next round (decisions/0040).

A job runs on a federation of its own; its server is SIGKILLed and started again, three times.
Timed from the new server's process start: until the job's workflow has its checkpoint back
(the next round's task goes out right after), and until that next round has ended. What it
includes: the server's start, the sites' reconnection (their backoff after the lost link), the
job's folder extracted again, the controller's start and its checkpoint read back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.federation import BENCH, BenchFederation, federation

PACED_CLIENT = """
import time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    time.sleep(0.05)
    params = model.params or {"w": np.zeros(4, dtype=np.float32)}
    flare.send(FLModel(params={k: v + 1 for k, v in params.items()}, num_examples=1))
"""


def rounds_per_life(quick: bool) -> int:
    """A paced job's rounds for each server (or replica) life: the kill comes a few rounds in,
    and the job must still be running when the next life takes it up. Quick (a smoke run, one
    kill): 15, so some 25 paced rounds (seconds) are left after the kill; else 40."""
    return 15 if quick else 40


def _rounds_done(fed: BenchFederation, job_id: str) -> int:
    meta: Any = fed.shoal_json("job", "meta", job_id)["data"]
    return int(((meta.get("progress") or {}).get("stats") or {}).get("rounds_done") or 0)


def _kill_and_start(fed: BenchFederation, ours: list[subprocess.Popen[bytes]]) -> float:
    """SIGKILL the server, start it again; the wall-clock time its new process started. A server
    this started before (in ``ours``) is reaped here, or it would linger as a zombie."""
    pids_file = fed.workspace / "run" / "pids.json"
    pids = json.loads(pids_file.read_text())
    pid = int(pids["server"])
    os.killpg(pid, signal.SIGKILL)
    for proc in ours:
        if proc.pid == pid:
            proc.wait(timeout=30)
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    started = time.time()
    with (fed.workspace / "logs" / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "server", "start", "-k", fed.workspace / "kits" / "server"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=fed.env,
        )
    ours.append(proc)
    pids["server"] = proc.pid  # poc stop ends this one
    pids_file.write_text(json.dumps(pids))
    return started


def resume_delays(summary: dict[str, Any], stops: list[float]) -> tuple[list[float], list[float]]:
    """For each restart in a job's summary, after the server stop at the same index: seconds
    until the workflow was back, and until the round after its checkpoint had ended."""
    ends = {r["round"]: r["time"] for r in summary["rounds"]}
    pairs = list(zip(summary["restarts"], stops, strict=True))
    resumed = [r["time"] - t for r, t in pairs]
    next_round = [ends[r["after_round"] + 1] - t for r, t in pairs]
    return resumed, next_round


def resume_after_restart(_: BenchFederation, quick: bool) -> list[Any]:
    from bench.workloads import Figure

    kills = 1 if quick else 3
    with federation() as fed, tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "paced"
        shutil.copytree(BENCH / "jobs" / "trivial", job)
        (job / "app" / "custom" / "client.py").write_text(PACED_CLIENT)
        cfg = {"workflow": "fedavg", "args": {"num_rounds": rounds_per_life(quick) * (kills + 1)}}
        (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(cfg))
        submitted: Any = fed.shoal_json("job", "submit", "-j", job)
        job_id = str(submitted["data"]["job_id"])
        starts = []
        ours: list[subprocess.Popen[bytes]] = []
        for _kill in range(kills):
            deadline = time.monotonic() + 120
            while _rounds_done(fed, job_id) < 3:  # a few rounds into this server's life
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} made no progress after the server's restart")
                time.sleep(0.05)
            starts.append(_kill_and_start(fed, ours))
            deadline = time.monotonic() + 60
            while fed.shoal("system", "status", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the restarted server did not answer")
                time.sleep(0.05)
        fed.shoal("job", "wait", job_id, "--timeout", "300")
        for proc in ours:  # poc stop (on the way out) ends the last one; it is reaped here
            if proc.pid != json.loads((fed.workspace / "run" / "pids.json").read_text())["server"]:
                proc.wait(timeout=30)
        summary = fed.summary(job_id)
    resumed, next_round = resume_delays(summary, starts)
    note = "2 sites, tiny model; target < 3 s"
    return [
        Figure("server restart", "SIGKILL, start -> resumed job's workflow back", resumed, "s", note),
        Figure("server restart", "SIGKILL, start -> its next round ended", next_round, "s", note),
    ]
