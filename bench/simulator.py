"""The simulator at scale: seconds per round and peak memory for 10, 100 and 1000 sites.

    python -m bench.simulator                  # N = 10, 100, 1000; 1 MB model; 3 rounds
    python -m bench.simulator --sites 10 100   # chosen N only
    python -m bench.simulator --mb 4 --rounds 5 --workers 2

Each N runs ``shoal simulate`` in its own process (so peaks do not carry over from one N to
the next) on a job whose sites add 1 to a float32 model of ``--mb`` megabytes. Memory is
reported two ways: what the simulator itself reports (``ru_maxrss`` of the controller
process plus each worker's own ``ru_maxrss``, summed: an upper bound, since workers do not
all peak at once) and the process tree's RSS sampled from /proc every 50 ms (the true
simultaneous peak, within the sampling interval). Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.federation import BENCH
from bench.measure import PeakSampler


def write_job(root: Path, mb: float, rounds: int) -> Path:
    """The large-model bench job (bench/jobs/big: each site adds 1 to every weight), resized."""
    shutil.copytree(BENCH / "jobs" / "big", root, ignore=shutil.ignore_patterns("__pycache__"))
    meta = {"name": f"sim-{mb:g}mb", "min_clients": 1, "deploy_map": {"app": ["@ALL"]}}
    (root / "meta.json").write_text(json.dumps(meta))
    client = {"script": "client.py", "args": f"--mb {mb:g}"}
    (root / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client))
    server = {"workflow": "fedavg", "args": {"num_rounds": rounds}}
    (root / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    return root


def run_one(job: Path, n_sites: int, workers: int | None, out: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "shoal", "simulate", "-j", str(job), "-n", str(n_sites), "-o", str(out)]
    argv += ["--format", "json", *(["--workers", str(workers)] if workers else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    with PeakSampler({"tree": proc.pid}) as sampler:
        stdout, _ = proc.communicate()
    wall = time.monotonic() - started
    doc = json.loads(stdout)
    if proc.returncode != 0:
        raise SystemExit(f"simulate failed for N={n_sites}: {doc}")
    data: dict[str, Any] = doc["data"]
    data["wall_s"] = wall
    data["tree_peak_mib"] = sampler.peaks["tree"] / 2**20
    return data


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--mb", type=float, default=1.0, help="model size in MB (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    opts = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, model {opts.mb:g} MB float32")
    header = (
        f"{'sites':>6} {'workers':>7} {'s/round':>8} {'min':>7} {'max':>7} {'total s':>8} "
        f"{'ms/site-run':>11} {'reported MiB':>13} {'tree MiB':>9}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-sim-") as tmp:
        job = write_job(Path(tmp) / "job", opts.mb, opts.rounds)
        for n in opts.sites:
            data = run_one(job, n, opts.workers, Path(tmp) / f"out-{n}")
            per_round = [r["seconds"] for r in data["rounds"]]
            median = statistics.median(per_round)
            per_run_ms = 1000 * median * data["workers"] / n
            print(
                f"{n:>6} {data['workers']:>7} {median:>8.2f} {min(per_round):>7.2f} {max(per_round):>7.2f} "
                f"{data['wall_s']:>8.1f} {per_run_ms:>11.1f} {data['peak_rss_mib']['total']:>13.0f} "
                f"{data['tree_peak_mib']:>9.0f}",
                flush=True,
            )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"# largest waited-for child process (ru_maxrss of children): {children:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
