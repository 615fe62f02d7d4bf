"""Load: many concurrent CLI clients issuing list/meta/submit against one federation.

``python -m bench.load [--clients 50] [--seconds 60]`` prints throughput, p50/p99 latency per
operation and every error by code. Each client is a real ``shoal`` process per call, as scripts
and agents use it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import main_thread_schedule

BENCH = Path(__file__).resolve().parent


@dataclass
class LoadResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    probe: dict[str, list[float]] = field(default_factory=dict)  # the server's answers (see _probe)
    # the server's event-loop thread over the run: seconds on a CPU, and runnable but waiting for one
    loop_cpu: float = 0.0
    loop_run_queue: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def operations(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def summary(self) -> dict[str, object]:
        return {
            "operations": self.operations,
            "per_second": round(self.operations / self.seconds, 1) if self.seconds else 0,
            "errors": dict(self.errors),
            "by_operation": _percentiles(self.latencies),
            "probe": _percentiles(self.probe),
            "server_loop_cpu_s": round(self.loop_cpu, 2),
            "server_loop_waiting_for_cpu_s": round(self.loop_run_queue, 2),
        }


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _percentiles(latencies: dict[str, list[float]]) -> dict[str, object]:
    return {
        name: {
            "count": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(p99(values) * 1000, 1),
        }
        for name, values in sorted(latencies.items())
    }


def _probe(
    env: dict[str, str], job_folder: Path, deadline: float, result: LoadResult, lock: threading.Lock
) -> None:
    """The server's own answer time under the load: one SDK client on one kept-open connection
    calls list, meta and (every fifth turn) submit, one at a time, PROBE_PAUSE apart. The CLI
    clients' figures also hold each call's Python start-up, which on 2 cores queues behind the
    49 others (Little's law); the probe's hold only the request and the server's answer."""
    import tempfile

    from bench.federation import BenchFederation
    from shoal.errors import ShoalError
    from shoal.wire.archive import zip_folder

    fed = BenchFederation(Path(env["SHOAL_HOME"]) / "poc", env)
    with tempfile.TemporaryDirectory(prefix="shoal-probe-") as tmp, fed.admin_client() as client:
        archive = Path(tmp) / "job.zip"
        zip_folder(job_folder, archive)
        job_id = ""
        turn = 0
        while time.monotonic() < deadline:
            op = "submit" if turn % 5 == 0 or not job_id else ("list" if turn % 2 else "meta")
            turn += 1
            start = time.perf_counter()
            try:
                if op == "submit":
                    job_id = str(client.submit_job(archive, "default")["job_id"])
                elif op == "list":
                    client.list_jobs("default", max_results=100)
                else:
                    client.get_job(job_id, "default")
                error = None
            except ShoalError as exc:
                error = exc.code
            elapsed = time.perf_counter() - start
            with lock:
                result.probe.setdefault(op, []).append(elapsed)
                if error:
                    result.errors[f"probe {error}"] += 1
            time.sleep(PROBE_PAUSE)


PROBE_PAUSE = 0.1  # seconds between the probe's calls


def _server_pid(env: dict[str, str]) -> int:
    pids: dict[str, int] = json.loads((Path(env["SHOAL_HOME"]) / "poc" / "run" / "pids.json").read_text())
    return int(pids["server"])


def run_load(env: dict[str, str], clients: int, seconds: float, job_folder: Path | None = None) -> LoadResult:
    job_folder = job_folder or BENCH / "jobs" / "trivial"
    result = LoadResult()
    lock = threading.Lock()
    known: list[str] = []
    deadline = time.monotonic() + seconds

    def call(*args: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", *args, "--format", "json"],
            capture_output=True,
            text=True,
            env=env,
        )
        doc: dict[str, object] = json.loads(proc.stdout)
        return doc

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            roll = rng.random()
            args: tuple[str, ...]
            if roll < 0.2 or not known:
                op, args = "submit", ("job", "submit", "-j", str(job_folder))
            elif roll < 0.6:
                op, args = "list", ("job", "list", "-m", "100")
            else:
                op, args = "meta", ("job", "meta", rng.choice(known))
            start = time.perf_counter()
            try:
                doc = call(*args)
            except ValueError:
                doc = {"status": "error", "error_code": "NOT_JSON"}
            elapsed = time.perf_counter() - start
            with lock:
                result.latencies.setdefault(op, []).append(elapsed)
                if doc.get("status") != "ok":
                    result.errors[str(doc.get("error_code"))] += 1
                elif op == "submit":
                    known.append(str(doc["data"]["job_id"]))  # type: ignore[index]

    server = _server_pid(env)
    before = main_thread_schedule(server)
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=_probe, args=(env, job_folder, deadline, result, lock)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - started
    after = main_thread_schedule(server)
    result.loop_cpu, result.loop_run_queue = after[0] - before[0], after[1] - before[1]
    return result


def main() -> int:
    from bench.federation import federation

    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    opts = parser.parse_args()
    with federation() as fed:
        result = run_load(fed.env, opts.clients, opts.seconds)
    print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
