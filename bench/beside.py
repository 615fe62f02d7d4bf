"""The small things beside their baseline: the trivial job, the per-round overhead and the CLI's
cold start on ``main`` before issue 19 (bench/baseline.py) and on this tree, in one run.

A difference of a few milliseconds is what issue 19's fifth target (nothing regresses) is about,
and two runs of one tree on this machine differ by about that much as the machine drifts. So
both sides run at once, each in a federation of its own, and their samples alternate: each pair
meets the same machine. A second between samples lets the last job's processes exit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.federation import BENCH, BenchFederation, federation
from bench.workloads import Figure, _cli_times, _per_round_once, trivial_once

#: Alternating pairs of trivial jobs, of per-round runs (50 rounds each), of CLI calls.
TRIVIAL_PAIRS = 20
COLD_START_PAIRS = 20
PER_ROUND_PAIRS = 4
PER_ROUND_ROUNDS = 50
PAUSE = 1.0


def small_jobs_beside_baseline() -> list[Figure]:
    """The trivial job (submit to ``job wait`` returning), the per-round overhead and ``job
    list``'s cold start, each beside the baseline's; none when the baseline's revision is not
    in this clone."""
    from bench.baseline import LOAD_BASELINE, baseline_env, resolve

    rev = resolve(LOAD_BASELINE)
    if rev is None:
        print(f"# beside: no baseline (revision {LOAD_BASELINE[:7]} is not in this clone)", flush=True)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        rounds = Path(tmp) / "rounds"
        shutil.copytree(BENCH / "jobs" / "trivial", rounds)
        config = rounds / "app" / "config" / "config_fed_server.json"
        config.write_text(json.dumps({"workflow": "fedavg", "args": {"num_rounds": PER_ROUND_ROUNDS}}))
        with baseline_env(rev) as extra, federation(env=extra) as before, federation() as after:
            trivial = _alternate(before, after, trivial_once, TRIVIAL_PAIRS)
            per_round = _alternate(before, after, lambda fed: _per_round_once(fed, rounds), PER_ROUND_PAIRS)
            cold = _alternate(before, after, _job_list_once, COLD_START_PAIRS, pause=0.2)
    label = f"[baseline {rev[:7]}]"
    what = "1 round, 2 sites: submit -> wait returns"
    per = f"{PER_ROUND_ROUNDS} rounds, tiny model, 2 sites"
    paired = "alternating with the next row"
    return [
        Figure(f"trivial job {label}", what, trivial[0], note=paired),
        Figure("trivial job [this tree, beside it]", what, trivial[1]),
        Figure(f"per-round overhead {label}", per, per_round[0], note=paired),
        Figure("per-round overhead [this tree, beside it]", per, per_round[1]),
        Figure(f"cold start {label}", "job list --format json", cold[0], note=paired),
        Figure("cold start [this tree, beside it]", "job list --format json", cold[1]),
    ]


def _job_list_once(fed: BenchFederation) -> float:
    """One cold start, called as cold_start calls it (the console script users run)."""
    return _cli_times(fed, ["job", "list", "--format", "json"], 1)[0]


def _alternate(
    before: BenchFederation,
    after: BenchFederation,
    sample: Callable[[BenchFederation], float],
    pairs: int,
    pause: float = PAUSE,
) -> tuple[list[float], list[float]]:
    """``pairs`` samples of each side, in turn; which side goes first alternates too."""
    sides: tuple[list[float], list[float]] = ([], [])
    for n in range(pairs):
        order = ((0, before), (1, after)) if n % 2 == 0 else ((1, after), (0, before))
        for side, fed in order:
            time.sleep(pause)
            sides[side].append(sample(fed))
    return sides
