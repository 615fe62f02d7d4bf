"""The pieces of progress drawn on a terminal (shoal.cli.live, monitor's live line): a bar, byte
counts, and a line that keeps the sites that matter when there are too many to name."""

from __future__ import annotations

from typing import Any

from shoal.cli.job_wait import _live_text, _site_states
from shoal.cli.live import bar, size_text


def test_bar_and_sizes() -> None:
    assert bar(0.0, 10) == "[----------]" and bar(0.5, 10) == "[#####-----]" and bar(2.0, 4) == "[####]"
    assert [size_text(n) for n in (512, 3 * 1024, 12.4 * 2**20, 5 * 2**30)] == [
        "512 B",
        "3.0 KiB",
        "12.4 MiB",
        "5.0 GiB",
    ]


def test_sites_are_named_while_they_fit_and_counted_by_state_when_not() -> None:
    few = {"site-2": "done", "site-1": "running"}
    assert _site_states(few, 40) == "site-1=running site-2=done"
    many = {f"site-{i}": "running" for i in range(38)} | {"site-98": "done", "site-99": "done"}
    assert _site_states(many, 100) == "sites: running 38, done 2"


def test_the_live_line_says_the_round_its_bar_and_the_time() -> None:
    meta: Any = {
        "job_id": "3151075053088038",
        "status": "RUNNING",
        "duration_s": 12.0,
        "progress": {"current_round": 2, "total_rounds": 5, "stats": {"rounds_done": 2}},
    }
    sites = {f"site-{i}": "running" for i in range(1, 41)}
    line = _live_text(meta, "loss=0.13 (round 2)", sites, 12.0, 18.0, 119)
    assert line == (
        "job 3151075053088038 RUNNING round 3/5 [########------------] 2 done 0:00:12 (~0:00:18 left) "
        "loss=0.13 (round 2) sites: running 40"
    )
    wide = _live_text(meta, "", {"site-1": "running", "site-2": "done"}, 12.0, None, 119)
    assert wide.endswith("done 0:00:12 site-1=running site-2=done"), wide
