"""The benchmark workloads. Each returns figures; ``quick`` shrinks it to a smoke run for CI."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.federation import BENCH, BenchFederation, federation
from bench.measure import PeakSampler, TreeCpu, cpu_seconds
from bench.relay import relay
from bench.restart import resume_after_restart
from bench.takeover import takeover

if TYPE_CHECKING:
    from shoal.store.base import JobStore


@dataclass
class Figure:
    workload: str
    metric: str
    samples: list[float]
    unit: str = "ms"
    note: str = ""

    def row(self) -> dict[str, Any]:
        scale = 1000.0 if self.unit == "ms" else 1.0
        values = [v * scale for v in self.samples]
        return {
            "workload": self.workload,
            "metric": self.metric,
            "unit": self.unit,
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
            "runs": len(values),
            "note": self.note,
        }


def _shoal_command() -> list[str]:
    """The ``shoal`` console script users run (beside this interpreter), else ``python -m shoal``
    (which also pays for runpy, ~10 ms)."""
    script = Path(sys.executable).with_name("shoal")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "shoal"]


def _cli_times(fed: BenchFederation, args: list[str], runs: int, cwd: Path | None = None) -> list[float]:
    times = []
    command = _shoal_command()
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([*command, *args], capture_output=True, env=fed.env, cwd=cwd)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"shoal {' '.join(args)}: {proc.stdout!r} {proc.stderr!r}")
    return times


def _submit(fed: BenchFederation, folder: Path) -> str:
    return str(fed.shoal_json("job", "submit", "-j", folder)["data"]["job_id"])  # type: ignore[index]


def _end_time(meta: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(meta["end_time"])).timestamp()


IDLE_PAUSE = 2.0  # seconds between samples: each job meets an idle federation, as a user's would


def _idle_pause(quick: bool) -> None:
    """Let the federation go idle before a sample (IDLE_PAUSE). Not in a quick run: its figures
    are not judged, and on CI every pause is the suite's wall time."""
    if not quick:
        time.sleep(IDLE_PAUSE)


def cold_start(fed: BenchFederation, quick: bool) -> list[Figure]:
    runs = 3 if quick else 20
    job_id = _submit(fed, BENCH / "jobs" / "trivial")
    fed.shoal("job", "wait", job_id)
    _idle_pause(quick)  # the job's processes are still exiting: measure the CLI, not them
    figures = [
        Figure(
            "cold start", "job list --format json", _cli_times(fed, ["job", "list", "--format", "json"], runs)
        ),
        Figure(
            "cold start",
            "job meta --format json",
            _cli_times(fed, ["job", "meta", job_id, "--format", "json"], runs),
        ),
    ]
    if fed.shoal("ls", "--help", check=False).returncode == 0:
        # From a folder that is not an app project (ls then uses the active kit): inside one,
        # reading pyproject.toml adds tomllib's import (~10-15 ms).
        with tempfile.TemporaryDirectory(prefix="shoal-bench-ls-") as elsewhere:
            times = _cli_times(fed, ["ls", "--format", "json"], runs, cwd=Path(elsewhere))
        figures.append(Figure("cold start", "ls --format json (outside an app project)", times))
    return figures


def trivial_job(fed: BenchFederation, quick: bool) -> list[Figure]:
    samples = []
    for _ in range(1 if quick else 5):
        _idle_pause(quick)
        samples.append(trivial_once(fed))
    return [Figure("trivial job", "1 round, 2 sites: submit -> wait returns", samples)]


def trivial_once(fed: BenchFederation) -> float:
    """Seconds from submitting the trivial job to ``job wait`` returning."""
    start = time.perf_counter()
    fed.shoal("job", "wait", _submit(fed, BENCH / "jobs" / "trivial"))
    return time.perf_counter() - start


def small_jobs_beside(_: BenchFederation, quick: bool) -> list[Figure]:
    """The trivial job, the per-round overhead and the cold start beside their baseline, alternating in two
    federations of their own (bench/beside.py); a full run's only."""
    from bench.beside import small_jobs_beside_baseline

    return [] if quick else small_jobs_beside_baseline()


def _rounds(fed: BenchFederation, job_id: str) -> list[dict[str, Any]]:
    """Round records from the server's job workspace."""
    rounds: list[dict[str, Any]] = fed.summary(job_id)["rounds"]
    return rounds


def per_round(fed: BenchFederation, quick: bool) -> list[Figure]:
    """(end of the last round - end of the first) / (rounds - 1), tiny model, 2 sites."""
    samples = []
    rounds = 10 if quick else 50
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "rounds"
        shutil.copytree(BENCH / "jobs" / "trivial", job)
        cfg = job / "app" / "config" / "config_fed_server.json"
        cfg.write_text(json.dumps({"workflow": "fedavg", "args": {"num_rounds": rounds}}))
        for _ in range(1 if quick else 3):
            _idle_pause(quick)  # each run meets an idle federation
            samples.append(_per_round_once(fed, job))
    return [Figure("per-round overhead", f"{rounds} rounds, tiny model, 2 sites", samples)]


def _per_round_once(fed: BenchFederation, job: Path) -> float:
    job_id = _submit(fed, job)
    fed.shoal("job", "wait", job_id)
    times = [r["time"] for r in _rounds(fed, job_id)]
    return float((times[-1] - times[0]) / (len(times) - 1))


def _pids(fed: BenchFederation) -> dict[str, int]:
    pids: dict[str, int] = json.loads((fed.workspace / "run" / "pids.json").read_text())
    return pids


LARGE_MODEL_MB: tuple[int, ...] = (100, 1024)  # python -m bench --model-mb N changes it
#: The model of a quick run's large_model and large_model_bucket: a smoke run of the same path
#: (streamed to disk, checkpointed, into the bucket), not a measurement of its speed.
QUICK_MODEL_MB = 4


#: The size measured beside its baseline in ``make bench`` (issue 19, target 4).
BASELINE_MB = 100
BASELINE_PAIRS = 2  # alternating runs of each side, a fresh federation each: the machine drifts


def large_model(fed: BenchFederation, quick: bool) -> list[Figure]:
    figures = []
    for mb in (QUICK_MODEL_MB,) if quick else LARGE_MODEL_MB:
        if not quick and mb == BASELINE_MB:
            figures += _large_model_beside_baseline(mb)
        figures += _large_model_once(fed, mb, f"{mb} MB model, 2 sites")
    return figures


def _large_model_beside_baseline(mb: int) -> list[Figure]:
    """The ``mb`` job on the baseline's code (bench/baseline.py: ``main`` before issue 19) and on
    this tree's, in turn, each in a fresh federation: the two sides meet the same machine."""
    from bench.baseline import LOAD_BASELINE, baseline_env, resolve

    rev = resolve(LOAD_BASELINE)
    if rev is None:
        print(f"# large_model: no baseline (revision {LOAD_BASELINE[:7]} is not in this clone)", flush=True)
        return []
    limits = {"result_floor_bytes": 4 << 30}
    figures: list[Figure] = []
    with baseline_env(rev) as extra:
        for _ in range(BASELINE_PAIRS):
            with federation(env=extra, limits=limits) as before:
                figures += _large_model_once(before, mb, f"{mb} MB model [baseline {rev[:7]}]")
            with federation(limits=limits) as after:
                figures += _large_model_once(after, mb, f"{mb} MB model [this tree, beside it]")
    return figures


def _large_model_once(fed: BenchFederation, mb: int, label: str) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "big"
        shutil.copytree(BENCH / "jobs" / "big", job)
        cfg = job / "app" / "config" / "config_fed_client.json"
        cfg.write_text(json.dumps({"script": "client.py", "args": f"--mb {mb}"}))
        with PeakSampler(_pids(fed)) as sampler, TreeCpu(_pids(fed)) as cpu:
            job_id = _submit(fed, job)
            fed.shoal("job", "wait", job_id)
        meta = fed.shoal_json("job", "meta", job_id)["data"]
        times = [r["time"] for r in _rounds(fed, job_id)]
        rounds = len(times)
    stats = meta["progress"]["stats"]  # type: ignore[index]
    moved = (stats["bytes_to_sites"] + stats["bytes_from_sites"]) / 2**20
    return [
        Figure(label, "seconds per round (rounds 2-3)", [(times[-1] - times[0]) / 2], "s"),
        Figure(label, "server tree peak RSS", [sampler.peaks["server"] / 2**20], "MiB"),
        *(
            Figure(label, f"{site} tree peak RSS", [peak / 2**20], "MiB")
            for site, peak in sorted(sampler.peaks.items())
            if site != "server"
        ),
        Figure(label, "MiB moved over the wire (3 rounds)", [moved], "MiB"),
        *(
            # the whole job (start and end included) over its rounds: the CPU a round costs
            Figure(label, f"{tree} tree CPU-s per round", [used / rounds], "s")
            for tree, used in sorted(cpu.seconds().items())
        ),
        *(
            # of which the job processes (the controller, a site's training script): where the
            # round's folding and training run, apart from the processes that move the bytes
            Figure(
                label, f"{tree} job processes CPU-s per round", [(cpu.seconds()[tree] - own) / rounds], "s"
            )
            for tree, own in sorted(cpu.root_seconds().items())
        ),
    ]


@dataclass
class LightFederation:
    fed: BenchFederation
    server_pid: int
    connected_s: float  # from starting every site at once to all of them connected


def _connected_sites(fed: BenchFederation) -> int:
    proc = fed.shoal("system", "status", "--format", "json", check=False)
    return len(json.loads(proc.stdout)["data"]["sites"]) if proc.returncode == 0 else -1


def _on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps a process and everything it starts on ``cpus`` (None: anywhere)."""
    import os

    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _split_cpus() -> tuple[set[int], set[int]] | None:
    """With ``pin``: the server and its job processes on the first core this process may use, the
    light sites on the others, as the load run splits them (bench/load.py, decisions/0046). The
    light agents stand for sites on machines of their own; sharing the cores, their CPU would be
    taken from the server's, and the round would time the sites' Python as much as the server."""
    import os

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


@contextmanager
def _light_federation(n_sites: int, processes: int = 1, pin: bool = False) -> Iterator[LightFederation]:
    """A POC server, then ``n_sites`` light agents (bench/light_sites.py) started at once, spread
    over ``processes`` processes: the connect storm of a federation whose sites all start
    together, timed until every one is connected (an agent refused retries, so none may be
    missing at the end). ``pin``: the server and the sites on cores of their own (_split_cpus)."""
    import os

    split = _split_cpus() if pin else None
    server_cpus, sites_cpus = split if split is not None else (None, None)

    with tempfile.TemporaryDirectory(prefix="shoal-bench-sites-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env["SHOAL_HOME"] = str(home)
        fed = BenchFederation(home / "poc", env)
        fed.shoal("poc", "prepare", "-n", str(n_sites), "--workspace", fed.workspace)
        kits = fed.workspace / "kits"
        # Every light site dials from 127.0.0.1: one peer address to the server's per-address
        # cap (local/limits.json), which real sites on their own addresses never share.
        (kits / "server" / "local" / "limits.json").write_text('{"max_connections_per_ip": 4096}')
        logs = fed.workspace / "logs"
        # the children keep their own copies of the log files: ours are closed at once
        with (logs / "server.log").open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "shoal", "server", "start", "-k", kits / "server"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_on_cpus(server_cpus),
            )
        procs = [server]
        try:
            deadline = time.monotonic() + 60
            while _connected_sites(fed) < 0:  # the server answers: the storm meets a ready server
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            names = [f"site-{i}" for i in range(1, n_sites + 1)]
            with (logs / "sites.log").open("ab") as sites_log:
                parts = [
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.light_sites", kits, *names[part::processes]],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=sites_log,
                        env=env,
                        cwd=BENCH.parent,
                        preexec_fn=_on_cpus(sites_cpus),
                    )
                    for part in range(processes)
                ]
            procs += parts
            for part in parts:  # every agent built (its kit read): then all dial at once
                assert part.stdout is not None and part.stdin is not None
                if part.stdout.readline().strip() != b"built":
                    raise RuntimeError("a light-sites process did not start")
            started = time.perf_counter()
            for part in parts:
                assert part.stdin is not None
                part.stdin.write(b"go\n")
                part.stdin.flush()
            deadline = time.monotonic() + 180
            while _connected_sites(fed) != n_sites:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"light sites did not all connect: {_connected_sites(fed)} of {n_sites}"
                    )
                time.sleep(0.2)
            yield LightFederation(fed, server.pid, time.perf_counter() - started)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=60)
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()


def _light_rounds(light: LightFederation, n: int, rounds: int) -> tuple[float, float, float]:
    """A FedAvg job of ``rounds`` rounds (tiny model) over all ``n`` sites: (seconds per round,
    server CPU seconds for the job, server tree peak RSS in bytes, the connected sites included)."""
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        shutil.copytree(BENCH / "jobs" / "trivial", job)
        (job / "meta.json").write_text(
            json.dumps({"name": f"{n}-sites", "min_clients": n, "deploy_map": {"app": ["@ALL"]}})
        )
        (job / "app" / "config" / "config_fed_server.json").write_text(
            json.dumps({"workflow": "fedavg", "args": {"num_rounds": rounds}})
        )
        cpu_before = cpu_seconds(light.server_pid)
        with PeakSampler({"server": light.server_pid}) as sampler:
            job_id = _submit(light.fed, job)
            light.fed.shoal("job", "wait", job_id)
        cpu = cpu_seconds(light.server_pid) - cpu_before
        times = [r["time"] for r in _rounds(light.fed, job_id)]
    return (times[-1] - times[0]) / (len(times) - 1), cpu, float(sampler.peaks["server"])


def many_sites(fed: BenchFederation, quick: bool) -> list[Figure]:
    figures = []
    for n in (5,) if quick else (50, 200):
        with _light_federation(n) as light:
            per, cpu, rss = _light_rounds(light, n, 5)
        figures += [
            Figure(f"{n} sites", "seconds per round", [per], "s"),
            Figure(f"{n} sites", "server CPU seconds for the 5-round job", [cpu], "s"),
            Figure(f"{n} sites", "server tree peak RSS", [rss / 2**20], "MiB"),
        ]
    return figures


def site_storm(fed: BenchFederation, quick: bool) -> list[Figure]:
    """2,000 light sites in 4 processes started at once against one server (the connect storm),
    then a 3-round FedAvg job over all of them. The server (with its job processes) runs on one
    core and the light sites on the others (``pin``): they stand for 2,000 machines of their own.
    Quick: 20 sites in 2 processes, as a smoke run."""
    n, processes = (20, 2) if quick else (2000, 4)
    with _light_federation(n, processes, pin=True) as light:
        per, cpu, rss = _light_rounds(light, n, 3)
    label = f"storm of {n} sites"
    return [
        Figure(
            label, f"all connected after starting at once ({processes} processes)", [light.connected_s], "s"
        ),
        Figure(label, "seconds per round", [per], "s"),
        Figure(label, "server CPU seconds for the 3-round job", [cpu], "s"),
        Figure(label, "server tree peak RSS (sites connected)", [rss / 2**20], "MiB"),
    ]


def many_jobs(fed: BenchFederation, quick: bool) -> list[Figure]:
    """A store holding many finished jobs: list and meta latency; submit throughput."""
    from shoal.store.sqlite import SqliteJobStore

    db = fed.workspace / "kits" / "server" / "workspace" / "store.db"
    # a second writer beside the running server: WAL allows it
    return _many_jobs(fed, quick, SqliteJobStore(db), "")


def many_jobs_postgres(_: BenchFederation, quick: bool) -> list[Figure]:
    """``many_jobs`` again with the server's store on PostgreSQL (a throwaway server from
    Debian's packages, as the tests start it), for the figures side by side with SQLite's."""
    from tests.pgserver import PostgresServer

    from shoal.store.postgres import PostgresJobStore

    pg = PostgresServer(durable=True)  # fsync on, as an operator's database would run
    try:
        url = pg.new_database()
        with federation(env={"SHOAL_STORE_URL": url}) as fed:
            return _many_jobs(fed, quick, PostgresJobStore(url), " (PostgreSQL)")
    finally:
        pg.stop()


def _many_jobs(fed: BenchFederation, quick: bool, store: JobStore, label: str) -> list[Figure]:
    from shoal.store.base import Submitter
    from shoal.wire.status import JobStatus

    n = 300 if quick else 10_000
    try:
        sample_id = ""
        for i in range(n):
            record, _ = store.create_job(
                study="default",
                name=f"old-{i}",
                meta={"name": f"old-{i}", "min_clients": 2, "deploy_map": {}},
                content_sha256="0" * 64,
                submitter=Submitter("admin@example.com", "example.org", "project_admin"),
            )
            # jobs_in_status never sees them as pending: they go straight to a terminal status
            store.transition(record.job_id, JobStatus.ABORTED, reason="benchmark filler")
            sample_id = str(record.job_id)
    finally:
        store.close()
    runs = 3 if quick else 20
    figures = [
        Figure(
            f"{n} jobs in the store{label}",
            "job list -m 100 --format json (whole CLI)",
            _cli_times(fed, ["job", "list", "-m", "100", "--format", "json"], runs),
        ),
        Figure(
            f"{n} jobs in the store{label}",
            "job meta --format json (whole CLI)",
            _cli_times(fed, ["job", "meta", sample_id, "--format", "json"], runs),
        ),
    ]
    from concurrent.futures import ThreadPoolExecutor

    seconds = 0.5 if quick else 10.0
    deadline = time.monotonic() + seconds
    accepted = [0]

    def submitter(_: int) -> None:
        while time.monotonic() < deadline:
            fed.shoal("job", "submit", "-j", BENCH / "jobs" / "trivial", "--format", "json")
            accepted[0] += 1

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submitter, range(4)))
    figures.append(
        Figure(
            f"{n} jobs in the store{label}",
            "submits accepted per second (4 submitters)",
            [accepted[0] / (time.monotonic() - start)],
            "/s",
        )
    )
    return figures


def burst(fed: BenchFederation, quick: bool) -> list[Figure]:
    """A sweep's burst of submits (bench/burst.py): 200 jobs from 8 SDK submitters at once."""
    from bench.burst import run_burst

    # quick: still more jobs than run at once (SHOAL_MAX_RUNNING_JOBS, 8): some wait their turn
    jobs, submitters = (10, 4) if quick else (200, 8)
    got = run_burst(fed, jobs, submitters)
    label = f"burst of {jobs} jobs"
    note = f"{submitters} submitters; " + ", ".join(f"{k} {v}" for k, v in sorted(got.statuses.items()))
    return [
        Figure(label, f"submits accepted per second ({submitters} submitters)", [got.accepted_per_s], "/s"),
        Figure(label, "seconds until every job ended", [got.all_ended_s], "s", note=note),
        Figure(label, "started in submission order (1 yes, 0 no)", [float(got.in_order)], "bool"),
        Figure(label, "most jobs running at once", [float(got.most_at_once)], "jobs"),
        Figure(label, "submit errors", [float(len(got.errors))], "count", note=",".join(got.errors[:5])),
    ]


def wait_latency(fed: BenchFederation, quick: bool) -> list[Figure]:
    samples = []
    for _ in range(1 if quick else 5):
        _idle_pause(quick)
        job_id = _submit(fed, BENCH / "jobs" / "trivial")
        fed.shoal("job", "wait", job_id)
        returned = time.time()
        samples.append(returned - _end_time(fed.shoal_json("job", "meta", job_id)["data"]))  # type: ignore[arg-type]
    return [Figure("wait latency", "job end -> job wait returns", samples)]


def monitor_latency(fed: BenchFederation, quick: bool) -> list[Figure]:
    samples = []
    for _ in range(1 if quick else 5):
        job_id = _submit(fed, BENCH / "jobs" / "trivial")
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "job", "monitor", job_id, "--format", "jsonl"],
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
        proc.stdout.close()
    return [Figure("monitor latency", "job end -> jsonl terminal event", samples)]


def secure_aggregation(fed: BenchFederation, quick: bool) -> list[Figure]:
    """Per-round overhead of FedAvg with secure_aggregation against plain FedAvg (2 sites, tiny
    model, on the POC), then the protocol's CPU and bytes for 10 and 100 sites (bench/secagg.py)."""
    from bench.secagg import protocol_round

    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "secagg"
        shutil.copytree(BENCH / "jobs" / "trivial", job)
        cfg = job / "app" / "config" / "config_fed_server.json"
        rounds = 5 if quick else 30
        args = {"num_rounds": rounds, "secure_aggregation": True, "secagg_threshold": 2}
        cfg.write_text(json.dumps({"workflow": "fedavg", "args": args}))
        samples = []
        for _ in range(1 if quick else 3):
            _idle_pause(quick)
            samples.append(_per_round_once(fed, job))
        figures.append(Figure("secagg per-round", f"{rounds} rounds, tiny model, 2 sites", samples))
    n_params = 10_000 if quick else 100_000
    runs = [(n, d) for n in ((10,) if quick else (10, 100)) for d in (None, 8)]
    for n, degree in runs:
        got = protocol_round(n, n_params, drop=1, degree=degree)
        label = f"secagg {n} sites" if degree is None else f"secagg+ {n} sites, {degree} partners"
        note = f"{n_params} float32 params, 1 dropout"
        figures += [
            Figure(label, "site: keys and shares", [got["site_setup_s"]], note=note),
            Figure(label, "site: masking its update", [got["site_mask_s"]], note=note),
            Figure(label, "server: unmasking", [got["server_unmask_s"]], note=note),
            Figure(label, "upload KiB (plain)", [got["plain_upload_bytes"] / 1024], "KiB"),
            Figure(label, "upload KiB (masked)", [got["upload_bytes"] / 1024], "KiB"),
            Figure(label, "train task secagg meta KiB", [got["train_task_meta_bytes"] / 1024], "KiB"),
        ]
    return figures


def large_model_bucket(_: BenchFederation, quick: bool) -> list[Figure]:
    """``large_model`` with the blobs and job files in a bucket (bench/bucket.py)."""
    from bench.bucket import large_model_bucket as run

    return run(quick, tuple(mb for mb in LARGE_MODEL_MB if mb >= 1024) or LARGE_MODEL_MB)


WORKLOADS: dict[str, Callable[[BenchFederation, bool], list[Figure]]] = {
    "cold_start": cold_start,
    "trivial_job": trivial_job,
    "per_round": per_round,
    "small_jobs_beside": small_jobs_beside,
    "wait_latency": wait_latency,
    "monitor_latency": monitor_latency,
    "large_model": large_model,
    "large_model_bucket": large_model_bucket,
    "many_sites": many_sites,
    "site_storm": site_storm,
    "many_jobs": many_jobs,
    "burst": burst,
    "many_jobs_postgres": many_jobs_postgres,
    "secure_aggregation": secure_aggregation,
    "resume_after_restart": resume_after_restart,
    "takeover": takeover,
    "relay": relay,
}
#: Workloads a quick run leaves out: the relay's path runs in tests/faults/test_split_sites.py on
#: the same federation (two replicas, PostgreSQL, a bucket, HAProxy), which takes ~15 s to start;
#: the small jobs beside their baseline are trivial_job's and per_round's paths on older code.
FULL_ONLY = frozenset({"relay", "small_jobs_beside"})
