"""Federated statistics: per-feature count, sum, mean, std, min, max and histogram over every
site's data, without any site sharing a row.

Two passes over the sites (task name ``"stats"``):

1. Each site sends, per feature, its row count, sum, min and max. The server combines them
   into the global count, sum, mean, min and max.
2. The server sends the global mean and the global [min, max] of each feature; each site sends
   its sum of squared deviations from the *global* mean and a histogram of its values over the
   *global* range. Summing those gives the exact global standard deviation and histogram (no
   approximation such as pooling per-site variances).

A site with fewer rows than ``min_count`` withholds: it sends no numbers at all (not even its
row count), only the fact that it withheld. Numbers travel as float64 arrays in the task's
params (safetensors, no pickle); the site's client is ``shoal.fl.clients.stats``.

The pure functions here (``site_pass1``, ``site_pass2``, ``combine_pass1``, ``std_from_ssd``,
``merge_histograms``, ``histogram_edges``) are what both sides compute, so they can be checked
against numpy on pooled data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shoal.wire.flmodel import FLModel
from shoal.workflows.base import RoundFailed, Workflow, WorkflowContext

Array = npt.NDArray[np.float64]

ALL_STATISTICS = ("count", "sum", "mean", "std", "min", "max", "histogram")
TASK_NAME = "stats"
WITHHELD_REASON = "fewer than min_count rows"
PASS1_KEYS = ("count", "sum", "min", "max")


# ---------------------------------------------------------------------------------------------
# What a site computes (also used by tests as the reference of the protocol)
# ---------------------------------------------------------------------------------------------


def site_pass1(data: npt.ArrayLike) -> dict[str, Array]:
    """Per-feature count, sum, min and max of ``data`` (rows × features), as float64 arrays."""
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("pass 1 needs at least one row of a 2-D table")
    return {
        "count": np.full(x.shape[1], float(x.shape[0])),
        "sum": x.sum(axis=0),
        "min": x.min(axis=0),
        "max": x.max(axis=0),
    }


def histogram_edges(lo: float, hi: float, bins: int) -> Array:
    """The ``bins + 1`` edges ``numpy.histogram`` uses for ``range=(lo, hi)`` (a constant
    feature, lo == hi, gets numpy's range (lo - 0.5, hi + 0.5))."""
    edges: Array = np.histogram_bin_edges(np.empty(0), bins=bins, range=(lo, hi)).astype(np.float64)
    return edges


def site_pass2(
    data: npt.ArrayLike, mean: Sequence[float], ranges: Sequence[Sequence[float]], bins: int
) -> dict[str, Array]:
    """Per-feature sum of squared deviations from the global ``mean`` ("ssd") and, when
    ``bins`` > 0, histogram counts over the global ``ranges`` ("hist", features × bins)."""
    x = np.asarray(data, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != m.shape[0] or len(ranges) != m.shape[0]:
        raise ValueError(f"pass 2 got {m.shape[0]} features for a table of shape {x.shape}")
    out: dict[str, Array] = {"ssd": ((x - m) ** 2).sum(axis=0)}
    if bins > 0:
        hist = np.zeros((x.shape[1], bins), dtype=np.float64)
        for j, (lo, hi) in enumerate(ranges):
            counts, _ = np.histogram(x[:, j], bins=bins, range=(float(lo), float(hi)))
            hist[j] = counts
        out["hist"] = hist
    return out


# ---------------------------------------------------------------------------------------------
# What the server combines
# ---------------------------------------------------------------------------------------------


def combine_pass1(parts: Iterable[Mapping[str, npt.ArrayLike]]) -> dict[str, Array]:
    """Global count, sum, mean, min and max from the sites' pass-1 parts."""
    items = [{k: np.asarray(p[k], dtype=np.float64) for k in PASS1_KEYS} for p in parts]
    if not items:
        raise ValueError("no pass-1 parts to combine")
    count = np.sum([p["count"] for p in items], axis=0)
    total = np.sum([p["sum"] for p in items], axis=0)
    return {
        "count": count,
        "sum": total,
        "mean": total / count,
        "min": np.min([p["min"] for p in items], axis=0),
        "max": np.max([p["max"] for p in items], axis=0),
    }


def std_from_ssd(ssd: npt.ArrayLike, count: npt.ArrayLike, ddof: int = 0) -> Array:
    """Standard deviation from the sum of squared deviations about the mean: sqrt(ssd / (n - ddof)).

    ddof=0 is the population std (numpy's default), ddof=1 the sample std; NaN where n <= ddof.
    """
    s = np.asarray(ssd, dtype=np.float64)
    n = np.asarray(count, dtype=np.float64) - ddof
    out: Array = np.full(s.shape, np.nan)
    np.sqrt(np.divide(s, n, out=np.zeros_like(s), where=n > 0), out=out, where=n > 0)
    return out


def merge_histograms(hists: Iterable[npt.ArrayLike]) -> Array:
    """The global histogram: the sum of the sites' histograms (all over the same edges)."""
    arrays = [np.asarray(h, dtype=np.float64) for h in hists]
    if not arrays:
        raise ValueError("no histograms to merge")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"histograms of different shapes: {sorted(shapes)}")
    merged: Array = np.sum(arrays, axis=0)
    return merged


def local_ssd(
    global_ssd_part: npt.ArrayLike, count: npt.ArrayLike, site_mean: npt.ArrayLike, global_mean: npt.ArrayLike
) -> Array:
    """A site's ssd about its own mean, from its ssd about the global mean:
    sum (x - m_site)^2 = sum (x - m_global)^2 - n (m_site - m_global)^2."""
    d = np.asarray(site_mean, dtype=np.float64) - np.asarray(global_mean, dtype=np.float64)
    out: Array = np.maximum(
        np.asarray(global_ssd_part, dtype=np.float64) - np.asarray(count, dtype=np.float64) * d * d, 0.0
    )
    return out


def _num(value: float) -> float | None:
    """JSON has no NaN/inf: those become null."""
    return float(value) if math.isfinite(value) else None


def feature_report(
    statistics: Sequence[str],
    *,
    count: float,
    total: float,
    lo: float,
    hi: float,
    std: float | None = None,
    std_sample: float | None = None,
    edges: Array | None = None,
    counts: Array | None = None,
) -> dict[str, Any]:
    """One feature's numbers, restricted to the requested ``statistics``."""
    out: dict[str, Any] = {}
    if "count" in statistics:
        out["count"] = int(count)
    if "sum" in statistics:
        out["sum"] = _num(total)
    if "mean" in statistics:
        out["mean"] = _num(total / count)
    if "std" in statistics and std is not None:
        out["std"] = _num(std)
        out["std_sample"] = None if std_sample is None else _num(std_sample)
    if "min" in statistics:
        out["min"] = _num(lo)
    if "max" in statistics:
        out["max"] = _num(hi)
    if "histogram" in statistics and edges is not None and counts is not None:
        out["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


# ---------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------


class FedStats(Workflow):
    """Arguments (``config_fed_server.json`` "args"):

    - ``statistics`` (list, default all of "count", "sum", "mean", "std", "min", "max",
      "histogram"): what to report. "std" is the population standard deviation (ddof=0, as
      numpy's default); the sample standard deviation (ddof=1) comes along as "std_sample".
      Without "std" and "histogram" the second pass is skipped.
    - ``min_count`` (int, default 10): a site with fewer rows withholds all its numbers and
      reports only that it withheld. Sites also apply their own ``--min-count``; the larger wins.
    - ``bins`` (int, default 10): equal-width histogram bins over each feature's global
      [min, max] (numpy.histogram semantics: the last bin is closed).
    - ``round_timeout`` (seconds, default 0 = none): deadline for each pass.
    - ``min_responses`` (int, default: the job's min_clients): answers needed to close pass 1.
      Pass 2 needs an answer from every site that contributed to pass 1 (otherwise the global
      std and histogram would not match the global count and mean).

    Writes ``statistics.json`` and ``metrics_summary.json`` into the job's workspace.
    """

    def __init__(
        self,
        ctx: WorkflowContext,
        *,
        statistics: Sequence[str] | None = None,
        min_count: int = 10,
        bins: int = 10,
        round_timeout: float = 0.0,
        min_responses: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(ctx, min_responses=min_responses, round_timeout=round_timeout, **extra)
        stats = list(ALL_STATISTICS if statistics is None else statistics)
        unknown = [s for s in stats if s not in ALL_STATISTICS]
        if unknown or not stats:
            raise ValueError(
                f"unknown statistics {unknown}; choose from {', '.join(ALL_STATISTICS)}"
                if unknown
                else "statistics must name at least one statistic"
            )
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError("min_count must be an integer of at least 1")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError("bins must be an integer of at least 1")
        self.statistics = stats
        self.min_count = min_count
        self.bins = bins
        self.round_timeout = float(round_timeout or 0.0)
        self.min_responses = min_responses or ctx.min_clients

    def _pass1(self) -> tuple[list[str], dict[str, dict[str, Array]], list[str], list[str]]:
        """Returns (features, parts of contributing sites, withheld sites, sites that answered)."""
        model = FLModel(params={}, meta={"pass": 1, "min_count": self.min_count})
        second = "std" in self.statistics or "histogram" in self.statistics
        task_id = self.ctx.send_task(TASK_NAME, model, round_number=0, total_rounds=2 if second else 1)
        features: list[str] | None = None
        parts: dict[str, dict[str, Array]] = {}
        withheld: list[str] = []
        answered: list[str] = []
        for site, update in self.ctx.results(
            task_id, min_responses=self.min_responses, timeout=self.round_timeout
        ):
            answered.append(site)
            if update.meta.get("withheld"):
                withheld.append(site)
                continue
            names = [str(f) for f in update.meta.get("features") or []]
            if features is None:
                features = names
            elif names != features:
                raise RoundFailed(
                    f"site {site} has features {names}, other sites have {features}: "
                    "every site's data needs the same columns in the same order",
                    site=site,
                )
            part = {k: np.asarray(update.params[k], dtype=np.float64) for k in PASS1_KEYS}
            if any(a.shape != (len(names),) for a in part.values()):
                raise RoundFailed(f"site {site} sent pass-1 numbers of the wrong shape", site=site)
            parts[site] = part
        if not parts or features is None:
            raise RoundFailed(
                f"every site withheld its statistics ({len(withheld)} of {len(answered)} answering sites "
                f"have fewer than min_count={self.min_count} rows): nothing to combine"
            )
        return features, parts, sorted(withheld), sorted(answered)

    def _pass2(
        self, features: list[str], glob: dict[str, Array], sites: list[str]
    ) -> dict[str, dict[str, Array]]:
        bins = self.bins if "histogram" in self.statistics else 0
        meta = {
            "pass": 2,
            "min_count": self.min_count,
            "features": features,
            "mean": [float(v) for v in glob["mean"]],
            "ranges": [[float(lo), float(hi)] for lo, hi in zip(glob["min"], glob["max"], strict=True)],
            "bins": bins,
        }
        task_id = self.ctx.send_task(
            TASK_NAME, FLModel(params={}, meta=meta), sites=sites, round_number=1, total_rounds=2
        )
        parts: dict[str, dict[str, Array]] = {}
        for site, update in self.ctx.results(task_id, min_responses=len(sites), timeout=self.round_timeout):
            if update.meta.get("withheld"):
                raise RoundFailed(f"site {site} contributed to pass 1 but withheld pass 2", site=site)
            part = {"ssd": np.asarray(update.params["ssd"], dtype=np.float64)}
            if bins:
                part["hist"] = np.asarray(update.params["hist"], dtype=np.float64)
                if part["hist"].shape != (len(features), bins):
                    raise RoundFailed(f"site {site} sent a histogram of the wrong shape", site=site)
            parts[site] = part
        missing = sorted(set(sites) - set(parts))
        if missing:  # results() returns early only with min_responses met, so this is a guard
            raise RoundFailed(f"no pass-2 answer from {', '.join(missing)}", site=missing[0])
        return parts

    def _features_report(
        self,
        features: list[str],
        stats: dict[str, Array],
        ssd: Array | None,
        hist: Array | None,
        edges: list[Array],
    ) -> dict[str, Any]:
        """Every feature's report from count/sum/min/max arrays, the sum of squared deviations
        from the mean (for std), and histogram counts: the global ones or one site's."""
        std = std_from_ssd(ssd, stats["count"]) if ssd is not None else None
        std1 = std_from_ssd(ssd, stats["count"], ddof=1) if ssd is not None else None
        return {
            name: feature_report(
                self.statistics,
                count=float(stats["count"][j]),
                total=float(stats["sum"][j]),
                lo=float(stats["min"][j]),
                hi=float(stats["max"][j]),
                std=None if std is None else float(std[j]),
                std_sample=None if std1 is None else float(std1[j]),
                edges=edges[j],
                counts=None if hist is None else hist[j],
            )
            for j, name in enumerate(features)
        }

    def run(self) -> None:
        features, parts, withheld, answered = self._pass1()
        contributing = sorted(parts)
        glob = combine_pass1(parts[s] for s in contributing)
        self.ctx.record_round(
            0,
            {
                "contributing_sites": float(len(contributing)),
                "withheld_sites": float(len(withheld)),
                "rows": float(glob["count"][0]) if len(features) else 0.0,
            },
            answered,
        )
        second: dict[str, dict[str, Array]] = {}
        if "std" in self.statistics or "histogram" in self.statistics:
            second = self._pass2(features, glob, contributing)
            self.ctx.record_round(1, {"contributing_sites": float(len(contributing))}, contributing)

        ssd = np.sum([second[s]["ssd"] for s in contributing], axis=0) if second else None
        hist = (
            merge_histograms(second[s]["hist"] for s in contributing)
            if second and "hist" in second[contributing[0]]
            else None
        )
        edges = [
            histogram_edges(float(lo), float(hi), self.bins)
            for lo, hi in zip(glob["min"], glob["max"], strict=True)
        ]

        report: dict[str, Any] = {
            "features": features,
            "statistics": self.statistics,
            "std_ddof": 0,
            "min_count": self.min_count,
            "global": self._features_report(features, glob, ssd, hist, edges),
            "sites": {},
        }
        for site in answered:
            if site in withheld:
                report["sites"][site] = {"withheld": True, "reason": WITHHELD_REASON}
                continue
            p = parts[site]
            site_ssd = (
                local_ssd(second[site]["ssd"], p["count"], p["sum"] / p["count"], glob["mean"])
                if second
                else None
            )
            site_hist = second[site].get("hist") if second else None
            report["sites"][site] = self._features_report(features, p, site_ssd, site_hist, edges)
        for site in self.ctx.sites:
            if site not in report["sites"]:
                report["sites"][site] = {"answered": False}
        self.ctx.write_json("statistics.json", report)
        self.ctx.write_metrics_summary("fedstats")
