"""``shoal simulate``: run a job on this machine with N virtual sites, no server or certificates.

The work is in ``shoal.simulator.engine`` (imported only when the command runs: it pulls numpy).
Round progress goes to stderr; the report is the command's data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shoal.cli.output import Result, number_text, write_human

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def register(groups: Any) -> None:
    p = groups.add_parser(
        "simulate",
        help="run a job locally with N virtual sites (no server, no certificates)",
        description="Run a job on this machine: the job's workflow as on a server, and N virtual "
        "sites (site-1..site-N) that run the training script through the same client API, "
        "multiplexed over a pool of worker processes. Results land where a downloaded job's do: "
        "OUT/workspace/FL_global_model.safetensors, metrics_summary.json, <site>/log.txt.",
    )
    p.add_argument(
        "-j",
        "--job",
        dest="job_folder",
        metavar="JOB",
        required=True,
        help="the job folder (holds meta.json)",
    )
    p.add_argument(
        "-n",
        "--n-sites",
        dest="n_sites",
        metavar="N",
        type=at_least_one,
        default=None,
        help="how many virtual sites (default: the job's min_clients)",
    )
    p.add_argument(
        "--workers",
        metavar="W",
        type=at_least_one,
        default=None,
        help="worker processes the sites share (default: one per CPU)",
    )
    p.add_argument(
        "-o",
        "--out",
        dest="out_dir",
        metavar="OUT",
        default=None,
        help="result folder, new or empty (default: a new temporary folder)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run the sites as actors on an existing Ray cluster (its address, host:port, or auto: "
        "the cluster this machine belongs to) instead of local worker processes; --workers then "
        "counts actors (default: the cluster's CPUs). Needs pip install 'shoal[ray]'",
    )
    # The checks a server applies to every site's update (its local/limits.json), same defaults.
    p.add_argument(
        "--accept-non-finite",
        action="store_true",
        help="fold updates holding NaN or infinity into the model, as a server with "
        "reject_non_finite_updates false does (default: such an update fails the job, naming the site)",
    )
    p.add_argument(
        "--max-num-examples",
        metavar="N",
        type=at_least_one,
        default=None,
        help="the most examples one site's update may weigh, as a server's max_num_examples "
        "(default: 4000000000)",
    )
    p.set_defaults(handler=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> Result:
    from shoal.simulator.engine import failure, run_simulation
    from shoal.wire.jobdef import load_job_definition
    from shoal.workflows.update_checks import DEFAULT_MAX_NUM_EXAMPLES, UpdateChecks

    job = Path(args.job_folder).expanduser()
    n_sites = args.n_sites if args.n_sites is not None else load_job_definition(job).min_clients
    stderr = sys.stderr  # the controller's own output is redirected while it runs
    line = None
    if args.format == "txt":
        from shoal.cli.live import StatusLine, live

        line = StatusLine(stderr) if live(args) else None  # on a terminal: sites done, in place

    def on_round(entry: dict[str, Any]) -> None:
        metrics = " ".join(f"{k}={number_text(v)}" for k, v in sorted(entry["metrics"].items()))
        seconds = entry["seconds"]
        took = f" in {seconds:.2f}s" if seconds is not None else ""
        rnd = entry["round"] + 1 if isinstance(entry["round"], int) else entry["round"]  # 1-based, as monitor
        text = f"round {rnd} done{took}: {entry['sites']} sites {metrics}"
        if line is not None:
            line.above(text)
            return
        write_human(text, stderr)
        stderr.flush()

    def on_site(state: dict[str, Any]) -> None:
        assert line is not None
        line.show(_sites_text(state, time.monotonic() - started))

    started = time.monotonic()

    try:
        report = run_simulation(
            job,
            n_sites,
            workers=args.workers,
            out_dir=Path(args.out_dir) if args.out_dir else None,
            on_round=on_round,
            on_site=on_site if line is not None else None,
            ray=args.ray,
            checks=UpdateChecks(
                reject_non_finite=not args.accept_non_finite,
                max_num_examples=args.max_num_examples or DEFAULT_MAX_NUM_EXAMPLES,
            ),
        )
    finally:
        if line is not None:  # the summary, or the error, is printed where the line was
            line.clear()
    if not report.ok:
        raise failure(report)
    last = report.rounds[-1]["metrics"] if report.rounds else {}
    rss = report.peak_rss_mib
    human = "\n".join(
        [
            f"Simulated {report.job_name} with {report.sites} sites on {report.workers} "
            f"{'Ray actors' if args.ray else 'workers'}: "
            f"{len(report.rounds)} rounds in {report.duration_s:.1f}s",
            *([" ".join(f"{k}={number_text(v)}" for k, v in sorted(last.items()))] if last else []),
            *(f"notice: {text}" for text in report.notices),
            f"peak memory: {rss['total']:.0f} MiB "
            f"(controller {rss['controller']:.0f}, workers {rss['workers']:.0f})",
            f"results: {report.workspace}",
        ]
    )
    return Result(report.as_dict(), human=human)


def _sites_text(state: dict[str, Any], elapsed: float) -> str:
    """``round 3/10 [########------------] 16/40 sites done 0:00:07``: the round under way (from
    1), a bar of its sites that answered, and the time since the simulation started."""
    from shoal.cli.live import bar, clock

    rnd, total = state["round"], state["total_rounds"]
    where = f"round {rnd + 1}" if isinstance(rnd, int) else "round"
    if isinstance(rnd, int) and isinstance(total, int) and total:
        where += f"/{total}"
    done, sites = state["done"], max(1, state["sites"])
    return f"{where} {bar(done / sites)} {done}/{sites} sites done {clock(elapsed)}"
