"""Run the benchmarks on a fresh POC and print a table: ``python -m bench [--only NAME] [--json FILE]``."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.federation import BENCH, BenchFederation, federation


def cold_start(fed: BenchFederation, runs: int) -> list[float]:
    """Wall time of a whole ``shoal job list --format json`` process, start to exit."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "job", "list", "--format", "json"],
            capture_output=True,
            env=fed.env,
        )
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    return times


def trivial_job(fed: BenchFederation, runs: int) -> list[float]:
    """Submit of a 1-round, 2-site job until ``job wait`` returns: what a user waits for."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job = fed.shoal_json("job", "submit", "-j", BENCH / "jobs" / "trivial")["data"]
        job_id = job["job_id"]  # type: ignore[index]
        fed.shoal("job", "wait", job_id)
        times.append(time.perf_counter() - start)
    return times


def _end_time(meta: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(meta["end_time"])).timestamp()


def monitor_latency(fed: BenchFederation, runs: int) -> list[float]:
    """From the job's end (server clock) to ``job monitor --format jsonl`` printing the terminal event."""
    samples = []
    for _ in range(runs):
        job_id = fed.shoal_json("job", "submit", "-j", BENCH / "jobs" / "trivial")["data"]["job_id"]  # type: ignore[index]
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "job", "monitor", str(job_id), "--format", "jsonl"],
            stdout=subprocess.PIPE,
            text=True,
            env=fed.env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("terminal"):
                samples.append(time.time() - _end_time(event["job_meta"]))
                break
        proc.wait()
    return samples


def wait_latency(fed: BenchFederation, runs: int) -> list[float]:
    """From the job's end (server clock) to ``job wait`` returning (the whole process)."""
    samples = []
    for _ in range(runs):
        job_id = fed.shoal_json("job", "submit", "-j", BENCH / "jobs" / "trivial")["data"]["job_id"]  # type: ignore[index]
        fed.shoal("job", "wait", str(job_id))
        returned = time.time()
        meta = fed.shoal_json("job", "meta", str(job_id))["data"]
        samples.append(returned - _end_time(meta))  # type: ignore[arg-type]
    return samples


WORKLOADS: dict[str, tuple[str, Callable[[BenchFederation, int], list[float]], int]] = {
    "cold_start": ("shoal job list --format json, cold start", cold_start, 10),
    "trivial_job": ("1-round 2-site trivial job, submit -> terminal", trivial_job, 5),
    "monitor_latency": ("job end -> monitor jsonl terminal event", monitor_latency, 5),
    "wait_latency": ("job end -> job wait returns", wait_latency, 5),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append", help="run only these workloads")
    parser.add_argument("--runs", type=int, default=None, help="override the number of runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    opts = parser.parse_args()
    chosen = opts.only or list(WORKLOADS)
    results = {}
    with federation() as fed:
        for name in chosen:
            title, fn, runs = WORKLOADS[name]
            samples = fn(fed, opts.runs or runs)
            results[name] = {
                "title": title,
                "runs": len(samples),
                "median_s": statistics.median(samples),
                "min_s": min(samples),
                "max_s": max(samples),
            }
    print(f"{'workload':<52} {'median':>9} {'min':>9} {'max':>9} {'runs':>5}")
    for r in results.values():
        print(
            f"{r['title']:<52} {r['median_s'] * 1000:>7.1f}ms {r['min_s'] * 1000:>7.1f}ms "
            f"{r['max_s'] * 1000:>7.1f}ms {r['runs']:>5}"
        )
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
