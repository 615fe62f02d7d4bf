"""Run the benchmark suite on a fresh POC and print a table.

    python -m bench                      # everything (make bench), about 10 minutes
    python -m bench --quick              # every workload but FULL_ONLY, shrunk to a smoke run (CI)
    python -m bench --only large_model   # one workload (repeatable)
    python -m bench --json figures.json  # also write the figures as JSON

The figures are not judged here; docs/performance.md records them with their targets.
"""

from __future__ import annotations

import argparse
import compileall
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import workloads
from bench.federation import federation
from bench.workloads import FULL_ONLY, WORKLOADS, Figure

if TYPE_CHECKING:
    from bench.load import LoadResult


def load_workload(env: dict[str, str], quick: bool) -> list[Figure]:
    """50 admins for 60 s (bench/load.py says the method), on this tree's code and, first, on
    the baseline's (bench/baseline.py), each in a fresh federation of its own; ``quick``: 4
    admins for 1 s on the suite's federation, no baseline."""
    from bench.baseline import LOAD_BASELINE, baseline_env, resolve
    from bench.load import run_load

    if quick:
        return _load_figures("load", run_load(env, clients=4, seconds=1))
    figures: list[Figure] = []
    rev = resolve(LOAD_BASELINE)
    if rev is None:
        print(f"# load: no baseline (revision {LOAD_BASELINE[:7]} is not in this clone)", flush=True)
    else:
        with baseline_env(rev) as extra, federation(env=extra) as fed:
            figures += _load_figures(f"load [baseline {rev[:7]}]", run_load(fed.env, clients=50, seconds=60))
    with federation() as fed:
        figures += _load_figures("load", run_load(fed.env, clients=50, seconds=60))
    return figures


def _load_figures(label: str, result: LoadResult) -> list[Figure]:
    from bench.load import p99

    figures = []
    for op, values in sorted(result.latencies.items()):
        figures.append(
            Figure(
                label, f"{op} p99 (client, a connection a call)", [p99(values)], note=f"{len(values)} calls"
            )
        )
    for op, values in sorted(result.probe.items()):
        figures.append(
            Figure(label, f"{op} p99, server's answer (probe)", [p99(values)], note=f"{len(values)} calls")
        )
    figures += [
        Figure(label, "errors", [float(sum(result.errors.values()))], "count"),
        Figure(label, "server loop thread: on a CPU", [result.loop_cpu], "s"),
        Figure(label, "server loop thread: waiting for a CPU", [result.loop_run_queue], "s"),
        Figure(label, "machine load average at the end", [result.load_average[1]], "load"),
    ]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [*WORKLOADS, "load"]
    parser.add_argument("--only", choices=names, action="append", help="run only these workloads")
    parser.add_argument("--quick", action="store_true", help="shrink every workload to a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument(
        "--model-mb", type=int, action="append", help="large_model sizes in MB (default 100 and 1024)"
    )
    opts = parser.parse_args()
    if opts.model_mb:
        workloads.LARGE_MODEL_MB = tuple(opts.model_mb)
    # A quick run leaves out what the test suite runs for real anyway (FULL_ONLY): its time is
    # the suite's, and a smoke run of it would only start the same federation again.
    chosen = opts.only or [n for n in names if not (opts.quick and n in FULL_ONLY)]
    # Byte-compiled as make does it, and as bench/baseline.py compiles the baseline: with
    # PYTHONDONTWRITEBYTECODE set, a module edited since would be compiled again by every CLI
    # call and job process (~3 ms for shoal.api.client alone), a cost no installed copy pays.
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "src"), quiet=1)
    rows = []
    started = time.monotonic()
    # large_model's job starts with no model, so its first round's 1 GB result would pass the
    # server's bound on a result (2x the task's model, at least result_floor_bytes) by far.
    with federation(limits={"result_floor_bytes": 4 << 30}) as fed:
        for name in chosen:
            t0 = time.monotonic()
            figures = (
                load_workload(fed.env, opts.quick) if name == "load" else WORKLOADS[name](fed, opts.quick)
            )
            rows += [f.row() for f in figures]
            print(f"# {name}: {time.monotonic() - t0:.1f}s", flush=True)
    print(f"\n{'workload':<26} {'metric':<46} {'median':>10} {'min':>10} {'max':>10} {'unit':>5} {'runs':>5}")
    for r in rows:
        print(
            f"{r['workload']:<26} {r['metric']:<46} {r['median']:>10.2f} {r['min']:>10.2f} {r['max']:>10.2f} "
            f"{r['unit']:>5} {r['runs']:>5}"
        )
    print(f"\nsuite took {time.monotonic() - started:.0f}s")
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
