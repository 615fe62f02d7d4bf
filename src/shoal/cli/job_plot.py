"""``shoal job plot ID [--metric K]``: a metric's per-round curve, drawn in the terminal.

The curve comes from the job's ``metrics_summary.json`` (fetched alone: ``download --only
metrics``): the global model's metric of each round, and each site's logged values of the same
name (the last one it logged in a round). Standard library only; JSON mode prints the series.
"""

from __future__ import annotations

import argparse
import json
import math

from shoal.cli.output import Result, number_text, terminal_columns
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEIGHT = 12  # rows of the plot area
MARKERS = "*o+x#@%&"  # global first, then each site in name order
GLOBAL = "global"

Series = dict[str, list[tuple[int, float]]]


def summary_series(summary: dict[str, Any]) -> tuple[list[str], dict[str, Series]]:
    """(metric names, metric -> series name -> [(round from 0, value)]) of a summary; values
    that are not finite numbers are left out (a diverged loss would flatten the rest)."""
    by_metric: dict[str, Series] = {}

    def put(metric: str, who: str, rnd: Any, value: Any) -> None:
        if type(rnd) is not int or isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not math.isfinite(value):
            return
        points = by_metric.setdefault(metric, {}).setdefault(who, [])
        if points and points[-1][0] == rnd:
            points[-1] = (rnd, float(value))  # the site's last value of that round
        else:
            points.append((rnd, float(value)))

    for entry in summary.get("rounds") or []:
        if isinstance(entry, dict) and isinstance(entry.get("metrics"), dict):
            for key, value in entry["metrics"].items():
                put(str(key), GLOBAL, entry.get("round"), value)
    logged = summary.get("logged_metrics") or {}
    if isinstance(logged, dict):
        for site in sorted(logged):
            for point in logged[site] if isinstance(logged[site], list) else []:
                if isinstance(point, dict):
                    put(str(point.get("key")), str(site), point.get("round"), point.get("value"))
    names = sorted(by_metric, key=lambda m: (GLOBAL not in by_metric[m], m))
    return names, by_metric


def draw(series: Series, width: int, height: int = HEIGHT) -> list[str]:
    """The curves as text lines: a y axis with the range, one marker per series and point, the
    rounds (counted from 1, as people count them) under the x axis, and a legend."""
    points = [p for values in series.values() for p in values]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 0.5, y1 + 0.5
    labels = [number_text(y1, ".4g"), number_text((y0 + y1) / 2, ".4g"), number_text(y0, ".4g")]
    pad = max(len(t) for t in labels)
    width = max(10, width - pad - 3)
    grid = [[" "] * width for _ in range(height)]
    for marker, (_, values) in zip(MARKERS, series.items(), strict=False):
        for x, y in values:
            col = 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (width - 1))
            grid[round((y1 - y) / (y1 - y0) * (height - 1))][col] = marker
    lines = []
    for i, row in enumerate(grid):
        label = (
            labels[0] if i == 0 else labels[2] if i == height - 1 else labels[1] if i == height // 2 else ""
        )
        lines.append(f"{label:>{pad}} |{''.join(row)}")
    lines.append(" " * pad + " +" + "-" * width)
    first, last = f"round {x0 + 1}", f"round {x1 + 1}"
    gap = max(1, width - len(first) - len(last))
    lines.append(" " * (pad + 2) + first + (" " * gap + last if x1 != x0 else ""))
    legend = "  ".join(f"{m} {name}" for m, name in zip(MARKERS, series, strict=False))
    lines.append(" " * (pad + 2) + legend)
    return lines


def fetch_summary(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The job's id and metrics_summary.json, fetched as ``download --only metrics`` does."""
    from shoal.cli.main import connect

    client = connect(args)
    job_id = str(args.job_id)
    return job_id, read_summary(client, job_id, args.study)


def read_summary(client: Any, job_id: str, study: str) -> dict[str, Any]:
    """A finished job's metrics_summary.json through ``client`` (an AdminClient): the result
    with only its metrics part, read in a temporary folder (the dashboard uses it too)."""
    import tempfile
    import zipfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="shoal-plot-") as tmp:
        archive = Path(tmp) / "result.zip"
        client.download_result(job_id, study, archive, ["metrics"])
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "metrics_summary.json"]
            if not names:
                raise ShoalError("RESULT_NOT_AVAILABLE", "the job's result holds no metrics_summary.json")
            summary = json.loads(zf.read(min(names, key=len)))
    if not isinstance(summary, dict):
        raise ShoalError("RESULT_NOT_AVAILABLE", "the job's metrics_summary.json is not an object")
    return summary


def write_png(series: Series, title: str, path: str) -> str:
    """The curves as a PNG picture (matplotlib, the ``plot`` extra, imported only here); the
    absolute path written."""
    from pathlib import Path

    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        from matplotlib import pyplot
    except ImportError:
        raise ShoalError(
            "INVALID_ARGS",
            "--png needs matplotlib, which is not installed",
            hint="Install it (pip install 'shoal[plot]'), or leave out --png for the terminal plot.",
        ) from None
    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    for who, values in series.items():
        axes.plot([r + 1 for r, _ in values], [v for _, v in values], marker="o", label=who)
    axes.set_xlabel("round")
    axes.set_title(title)
    axes.legend()
    axes.grid(True, alpha=0.3)
    target = Path(path).expanduser().resolve()
    try:
        figure.savefig(target, format="png")
    finally:
        pyplot.close(figure)
    return str(target)


def cmd_plot(args: argparse.Namespace) -> Result:
    job_id, summary = fetch_summary(args)
    names, by_metric = summary_series(summary)
    if not names:
        raise ShoalError("RESULT_NOT_AVAILABLE", f"job {job_id} recorded no metric with a round")
    metric = args.metric or names[0]
    if metric not in by_metric:
        raise ShoalError(
            "INVALID_ARGS",
            f"job {job_id} recorded no metric {metric[:80]!r}",
            hint=f"Its metrics: {', '.join(names)}.",
        )
    series = by_metric[metric]
    data = {
        "job_id": job_id,
        "metric": metric,
        "metrics": names,
        "series": {who: [{"round": r, "value": v} for r, v in values] for who, values in series.items()},
    }
    title = f"job {job_id}: {metric} per round"
    if args.png:
        data["png"] = write_png(series, title, args.png)
    return Result(data, human=lambda: "\n".join([title, *draw(series, min(terminal_columns(), 100))]))
