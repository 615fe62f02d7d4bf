"""A running job's live facts (meta's ``progress`` and ``notices``, ``job stats``), kept bounded.

Sites and their scripts feed this view and every viewer of the job is sent it, so what one site
may add is capped (shoal.wire.channel: METRIC_KEYS_PER_SITE, METRIC_KEY_MAX, NOTICES_PER_SITE,
NOTICES_PER_JOB, NOTICE_CHARS_MAX). What passes a cap is dropped, and one notice says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shoal.wire.channel import (
    METRIC_KEY_MAX,
    METRIC_KEYS_PER_SITE,
    NOTICE_CHARS_MAX,
    NOTICES_PER_JOB,
    NOTICES_PER_SITE,
)
from shoal.wire.status import brief

#: The largest privacy report (JSON characters) kept for a job: a few hundred sites' epsilons.
PRIVACY_REPORT_MAX = 64 * 1024
#: Points kept per curve (one a round): a longer job's curve shows its latest rounds.
SERIES_POINTS_MAX = 1000


@dataclass
class Progress:
    """Live facts about a running job, shown by meta, stats and monitor."""

    current_round: int | None = None
    total_rounds: int | None = None
    rounds_done: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    #: The round ``last_metrics`` belong to (0-based): ``current_round`` is already the next one.
    last_metrics_round: int | None = None
    site_status: dict[str, str] = field(default_factory=dict)
    tasks_sent: int = 0
    results_received: int = 0
    bytes_to_sites: int = 0
    bytes_from_sites: int = 0
    site_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    site_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    #: (epsilon, delta) spent so far, per site and for the job, as the workflow last reported it.
    privacy: dict[str, Any] | None = None
    #: Per-round curves, metric -> [(round from 0, value)]: the global model's metrics, and
    #: per site what its scripts logged (its last value of a round). Kept apart, so no site
    #: name can pass for the global model.
    global_series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    site_series: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    _metric_keys: dict[str, set[str]] = field(default_factory=dict)
    _site_notices: dict[str, int] = field(default_factory=dict)
    _overflowed: set[str] = field(default_factory=set)

    def record_privacy(self, spent: Any) -> None:
        """Keep the workflow's latest privacy report (a workflow is job code: anything that is
        not a JSON object of bounded size is dropped)."""
        import json

        if isinstance(spent, dict) and len(json.dumps(spent, default=str)) <= PRIVACY_REPORT_MAX:
            self.privacy = spent

    def count(self, site: str, key: str, amount: int = 1) -> None:
        counts = self.site_counts.setdefault(site, {})
        counts[key] = counts.get(key, 0) + amount

    def add_notice(self, text: str, site: str | None = None) -> bool:
        """Add a notice (cut to NOTICE_CHARS_MAX) unless it is there already or a cap is
        reached: NOTICES_PER_SITE for ``site`` (a notice about or from that site), then
        NOTICES_PER_JOB. Whether anything was added."""
        text = brief(text, NOTICE_CHARS_MAX)
        if text in self.notices:
            return False
        if site is not None and self._site_notices.get(site, 0) >= NOTICES_PER_SITE:
            text = f"{site}: more notices were dropped (at most {NOTICES_PER_SITE} a site)"
            return self._overflow(site, text)
        if len(self.notices) >= NOTICES_PER_JOB:
            return self._overflow("", f"more notices were dropped (at most {NOTICES_PER_JOB} a job)")
        self.notices.append(text)
        if site is not None:
            self._site_notices[site] = self._site_notices.get(site, 0) + 1
        return True

    def _overflow(self, who: str, text: str) -> bool:
        """The one notice saying ``who`` (a site, or "" for the job) passed a cap: outside the
        caps, once each, so there are at most NOTICES_PER_JOB + sites + 1 notices."""
        if who in self._overflowed:
            return False
        self._overflowed.add(who)
        self.notices.append(text)
        return True

    def put_site_metric(self, site: str, key: str, value: Any) -> bool:
        """Keep ``site``'s latest ``value`` of metric ``key``, if the key is at most
        METRIC_KEY_MAX characters and among the first METRIC_KEYS_PER_SITE the site reported.
        False (and, the first time, a notice) for one that is dropped."""
        keys = self._metric_keys.setdefault(site, set())
        if key not in keys:
            if len(key) > METRIC_KEY_MAX or len(keys) >= METRIC_KEYS_PER_SITE:
                self._overflow(
                    f"metrics:{site}",
                    f"{site}: metrics were dropped: at most {METRIC_KEYS_PER_SITE} names of at most "
                    f"{METRIC_KEY_MAX} characters a site (first dropped: {brief(key, 80)!r})",
                )
                return False
            keys.add(key)
        self.site_metrics.setdefault(site, {})[key] = value
        return True

    def add_point(self, metric: str, site: str | None, rnd: int, value: Any) -> None:
        """One point of a curve: ``site``'s (None: the global model's) ``value`` of ``metric``
        in round ``rnd``; a later value of the same round replaces it. Values that are not
        finite numbers are left out (as ``job plot`` leaves them), and a curve keeps its last
        SERIES_POINTS_MAX rounds. The caller bounds the names (put_site_metric, round_metrics)."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return
        curves = self.global_series if site is None else self.site_series.setdefault(site, {})
        points = curves.setdefault(metric, [])
        if points and points[-1][0] == rnd:
            points[-1] = (rnd, float(value))
            return
        points.append((rnd, float(value)))
        del points[:-SERIES_POINTS_MAX]

    @property
    def round(self) -> int | None:
        """The round under way counted from 1, as people (and every human view) count it;
        ``current_round`` counts from 0."""
        return self.current_round + 1 if self.current_round is not None else None

    def sites_stats(self, sites: list[str]) -> dict[str, dict[str, Any]]:
        """Each site's part (``job stats``): its status, its counters and its last metrics."""
        return {
            s: {
                "status": self.site_status.get(s),
                **self.site_counts.get(s, {}),
                "metrics": self.site_metrics.get(s, {}),
            }
            for s in sites
        }

    def series(self, last: int | None = None) -> dict[str, Any]:
        """The curves (``job series``): the global model's and each site's, each point
        ``[round, value]``; ``last``: only each curve's last points."""

        def points(curve: list[tuple[int, float]]) -> list[list[float]]:
            return [list(pt) for pt in (curve[-last:] if last else curve)]

        return {
            "global": {k: points(v) for k, v in self.global_series.items()},
            "sites": {s: {k: points(v) for k, v in m.items()} for s, m in self.site_series.items()},
        }

    def as_stats(self) -> dict[str, Any]:
        return {
            "current_round": self.current_round,
            "round": self.round,
            "total_rounds": self.total_rounds,
            "rounds_done": self.rounds_done,
            "last_metrics": self.last_metrics,
            "last_metrics_round": self.last_metrics_round,
            "tasks_sent": self.tasks_sent,
            "results_received": self.results_received,
            "bytes_to_sites": self.bytes_to_sites,
            "bytes_from_sites": self.bytes_from_sites,
        }
