"""A job's live view stays bounded whatever its sites send (shoal.scheduler.progress)."""

from __future__ import annotations

from shoal.scheduler.progress import Progress
from shoal.wire.channel import (
    METRIC_KEY_MAX,
    METRIC_KEYS_PER_SITE,
    NOTICE_CHARS_MAX,
    NOTICES_PER_JOB,
    NOTICES_PER_SITE,
)


def test_notices_are_capped_per_site_and_per_job_with_one_notice_each() -> None:
    p = Progress()
    sites = [f"site-{i}" for i in range(10)]
    for site in sites:
        for i in range(3 * NOTICES_PER_SITE):
            p.add_notice(f"{site}: {i} " + "x" * 50_000, site)
    assert len(p.notices) <= NOTICES_PER_JOB + len(sites) + 1
    assert all(len(n) <= NOTICE_CHARS_MAX + 60 for n in p.notices)
    dropped = [n for n in p.notices if "more notices were dropped" in n]
    assert len(dropped) == len({n.split(":")[0] for n in dropped}), dropped  # once per site (or job)
    assert p.notices.count("more notices were dropped (at most 50 a job)") == 1


def test_a_notice_already_shown_is_not_added_again() -> None:
    p = Progress()
    assert p.add_notice("site-1: hello", "site-1") and not p.add_notice("site-1: hello", "site-1")
    assert p.notices == ["site-1: hello"]


def test_metric_names_are_capped_per_site_and_their_length_bounded() -> None:
    p = Progress()
    for i in range(3 * METRIC_KEYS_PER_SITE):
        p.put_site_metric("site-1", f"k{i}", float(i))
    assert not p.put_site_metric("site-1", "y" * (METRIC_KEY_MAX + 1), 1.0)
    assert p.put_site_metric("site-1", "k0", 42.0), "a name already kept still updates"
    assert p.put_site_metric("site-2", "k0", 1.0), "the cap is per site"
    assert len(p.site_metrics["site-1"]) == METRIC_KEYS_PER_SITE and p.site_metrics["site-1"]["k0"] == 42.0
    assert [n for n in p.notices if n.startswith("site-1: metrics were dropped")] == [p.notices[0]]


def test_curves_keep_a_point_a_round_bounded_and_only_finite_numbers() -> None:
    from shoal.scheduler.progress import SERIES_POINTS_MAX

    p = Progress()
    p.add_point("loss", None, 0, 2.0)
    p.add_point("loss", None, 0, 1.5)  # a later value of the same round replaces it
    p.add_point("loss", None, 1, float("nan"))
    p.add_point("loss", None, 1, True)
    p.add_point("loss", "site-1", 1, 0.25)
    assert p.global_series == {"loss": [(0, 1.5)]}
    assert p.site_series == {"site-1": {"loss": [(1, 0.25)]}}
    for rnd in range(2, SERIES_POINTS_MAX + 50):
        p.add_point("loss", "site-1", rnd, float(rnd))
    points = p.site_series["site-1"]["loss"]
    last = SERIES_POINTS_MAX + 49
    assert len(points) == SERIES_POINTS_MAX and points[-1] == (last, float(last))
