"""Load: many concurrent admin clients issuing list/meta/submit against one federation.

``python -m bench.load [--clients 50] [--seconds 60] [--think 1.0] [--cli] [--baseline REV]``
prints throughput, p50/p99 latency per operation (as the clients saw it, and the server's own
answers through a probe) and every error by code.

The method (issue 19). In a federation the admins run their CLIs on their own machines and
the sites train on theirs; the server's machine runs the server and its jobs' controllers. On
one machine the load generator's own CPU would otherwise be measured as the server's slowness
(50 CLI processes at ~0.07 CPU-s each queue for seconds on 2 cores, whatever the server does).
So by default the server's process tree (its job controllers included) runs on one core, and
the sites' trees and this process (the clients) on the others (``sched_setaffinity``, inherited
by every process and thread they start). Each client is a thread with the SDK client
(``shoal.api``) that opens a new mTLS HTTPS connection for every call, as a CLI call does, and
pauses a think time between calls (uniform in 0..2x ``--think``: an admin, or a script, issues a
command about once a second). ``--cli`` runs a real ``shoal`` process per call instead, back to
back (the method before 2026-12-05's second sitting). The probe (one client on a kept
connection, one call at a time) times the server's answers without the connection's setup.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import main_thread_schedule, pin, pin_tree

if TYPE_CHECKING:
    from shoal.api.kits import AdminKit

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
    method: str = ""
    load_average: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load, at start and end

    @property
    def operations(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def summary(self) -> dict[str, object]:
        return {
            "method": self.method,
            "machine_load_average_start_end": self.load_average,
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


THINK = 1.0  # mean seconds an SDK client pauses between its calls


def _pids(env: dict[str, str]) -> dict[str, int]:
    pids: dict[str, int] = json.loads((Path(env["SHOAL_HOME"]) / "poc" / "run" / "pids.json").read_text())
    return pids


def _split_cores(pids: dict[str, int]) -> tuple[set[int], set[int]] | None:
    """The server's tree on the first core, the sites' trees and this process on the others;
    None on a single core (nothing to split). Returns (server's cores, everyone else's)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    server, others = {cores[0]}, set(cores[1:])
    pin_tree(pids["server"], server)
    for name, pid in pids.items():
        if name != "server":
            pin_tree(pid, others)
    pin(os.getpid(), others)
    return server, others


def _unsplit(pids: dict[str, int], cores: set[int]) -> None:
    for pid in pids.values():
        pin_tree(pid, cores)
    pin(os.getpid(), cores)


def _pick(rng: random.Random, known: list[str]) -> str:
    roll = rng.random()
    if roll < 0.2 or not known:
        return "submit"
    return "list" if roll < 0.6 else "meta"


def _sdk_client(
    kit: AdminKit,
    archive: Path,
    seed: int,
    deadline: float,
    think: float,
    known: list[str],
    result: LoadResult,
    lock: threading.Lock,
) -> None:
    """One admin: a new mTLS connection per call (as a CLI call makes), a think time between."""
    from shoal.api.client import AdminClient
    from shoal.errors import ShoalError

    rng = random.Random(seed)
    client = AdminClient(kit)
    time.sleep(rng.uniform(0, 2 * think))  # the admins do not all start at the same instant
    while time.monotonic() < deadline:
        op = _pick(rng, known)
        start = time.perf_counter()
        error = job_id = None
        try:
            if op == "submit":
                job_id = str(client.submit_job(archive, "default")["job_id"])
            elif op == "list":
                client.list_jobs("default", max_results=100)
            else:
                client.get_job(rng.choice(known), "default")
        except ShoalError as exc:
            error = exc.code
        finally:
            client.close()
        elapsed = time.perf_counter() - start
        with lock:
            result.latencies.setdefault(op, []).append(elapsed)
            if error:
                result.errors[error] += 1
            elif job_id:
                known.append(job_id)
        time.sleep(rng.uniform(0, 2 * think))


def _cli_client(
    env: dict[str, str],
    job_folder: Path,
    seed: int,
    deadline: float,
    think: float,
    known: list[str],
    result: LoadResult,
    lock: threading.Lock,
) -> None:
    """One admin running a real ``shoal`` process per call."""
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        op = _pick(rng, known)
        args: tuple[str, ...] = {
            "submit": ("job", "submit", "-j", str(job_folder)),
            "list": ("job", "list", "-m", "100"),
        }.get(op) or ("job", "meta", rng.choice(known))
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", *args, "--format", "json"],
            capture_output=True,
            text=True,
            env=env,
        )
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {"status": "error", "error_code": "NOT_JSON"}
        elapsed = time.perf_counter() - start
        with lock:
            result.latencies.setdefault(op, []).append(elapsed)
            if doc.get("status") != "ok":
                result.errors[str(doc.get("error_code"))] += 1
            elif op == "submit":
                known.append(str(doc["data"]["job_id"]))
        if think:
            time.sleep(rng.uniform(0, 2 * think))


def run_load(
    env: dict[str, str],
    clients: int,
    seconds: float,
    job_folder: Path | None = None,
    *,
    cli: bool = False,
    think: float = THINK,
    split: bool = True,
) -> LoadResult:
    """``clients`` admins for ``seconds`` against the federation ``env`` names (the module's
    docstring says the method); ``cli``: real CLI processes, ``split``: cores split as above."""
    import tempfile

    from bench.federation import BenchFederation
    from shoal.wire.archive import zip_folder

    job_folder = job_folder or BENCH / "jobs" / "trivial"
    result = LoadResult(load_average=(os.getloadavg()[0], 0.0))
    lock = threading.Lock()
    known: list[str] = []
    pids = _pids(env)
    everywhere = os.sched_getaffinity(0)
    cores = _split_cores(pids) if split else None
    result.method = (
        f"{clients} {'CLI processes' if cli else 'SDK clients (a connection per call)'}, think "
        f"{think:g} s; "
        + (
            f"server tree on CPU {sorted(cores[0])}, sites and clients on {sorted(cores[1])}"
            if cores
            else "no core split"
        )
    )
    try:
        with tempfile.TemporaryDirectory(prefix="shoal-load-") as tmp:
            archive = Path(tmp) / "job.zip"
            zip_folder(job_folder, archive)
            kit = BenchFederation(Path(env["SHOAL_HOME"]) / "poc", env).admin_client().kit
            before = main_thread_schedule(pids["server"])
            started = time.monotonic()
            deadline = started + seconds
            threads = [
                threading.Thread(
                    target=_cli_client if cli else _sdk_client,
                    args=(env, job_folder) if cli else (kit, archive),
                    kwargs={
                        "seed": i,
                        "deadline": deadline,
                        "think": think,
                        "known": known,
                        "result": result,
                        "lock": lock,
                    },
                )
                for i in range(clients)
            ]
            threads.append(threading.Thread(target=_probe, args=(env, job_folder, deadline, result, lock)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            result.seconds = time.monotonic() - started
            after = main_thread_schedule(pids["server"])
    finally:
        if cores:
            _unsplit(pids, everywhere)
    result.loop_cpu, result.loop_run_queue = after[0] - before[0], after[1] - before[1]
    result.load_average = (result.load_average[0], os.getloadavg()[0])
    return result


def main() -> int:
    from bench.baseline import LOAD_BASELINE, baseline_env, resolve
    from bench.federation import federation

    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--think", type=float, default=THINK, help="mean seconds between a client's calls")
    parser.add_argument("--cli", action="store_true", help="a real shoal process per call")
    parser.add_argument("--no-split", action="store_true", help="leave every process on every core")
    parser.add_argument(
        "--baseline",
        default=None,
        help=f"also run this git revision's code first, the same way (e.g. {LOAD_BASELINE[:7]})",
    )
    opts = parser.parse_args()

    def once(extra: dict[str, str]) -> dict[str, object]:
        with federation(env=extra) as fed:
            result = run_load(
                fed.env, opts.clients, opts.seconds, cli=opts.cli, think=opts.think, split=not opts.no_split
            )
        return result.summary()

    out: dict[str, object] = {}
    if opts.baseline:
        rev = resolve(opts.baseline)
        if rev is None:
            raise SystemExit(f"no revision {opts.baseline} in this repository")
        with baseline_env(rev) as extra:
            out[f"baseline {rev[:7]}"] = once(extra)
    out["this tree"] = once({})
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
