"""``shoal job plot ID [--metric K] [--follow]``: a metric's per-round curve, drawn in the terminal.

The curve of a finished job comes from its ``metrics_summary.json`` (fetched alone: ``download
--only metrics``): the global model's metric of each round, and each site's logged values of
the same name (the last one it logged in a round). A job that runs has no summary yet: its
curve so far comes from the server's curves of the same values (``/jobs/{id}/series``), and
``--follow`` redraws it on a terminal as each round ends. Standard library only; JSON mode
prints the series.
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

    from shoal.api.answers import JobMeta
    from shoal.api.client import AdminClient

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


def fetch_summary(client: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    """The job's metrics_summary.json, fetched as ``download --only metrics`` does."""
    return read_summary(client, str(args.job_id), args.study)


def read_summary(client: AdminClient, job_id: str, study: str) -> dict[str, Any]:
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


def live_summary(answer: dict[str, Any]) -> dict[str, Any]:
    """The server's curves of a running job (``/jobs/{id}/series``: ``{"global": {metric:
    [[round, value]]}, "sites": {site: {metric: [[round, value]]}}}``) in metrics_summary.json's
    shape, so that one reader (summary_series) draws both."""
    rounds: dict[int, dict[str, Any]] = {}
    for metric, points in (answer.get("global") or {}).items():
        for rnd, value in points:
            rounds.setdefault(rnd, {})[metric] = value
    logged = {
        site: [
            {"key": metric, "round": rnd, "value": value}
            for metric, points in curves.items()
            for rnd, value in points
        ]
        for site, curves in (answer.get("sites") or {}).items()
    }
    for points in logged.values():
        points.sort(key=lambda p: p["round"])
    return {
        "rounds": [{"round": r, "metrics": m} for r, m in sorted(rounds.items())],
        "logged_metrics": logged,
    }


def job_summary(client: AdminClient, args: argparse.Namespace) -> tuple[dict[str, Any], JobMeta | None]:
    """(the summary to draw, the job's meta while it runs or None once it ended): a finished
    job's own metrics_summary.json, else the server's curves of the rounds so far."""
    from shoal.wire.status import JobStatus

    meta = client.get_job(str(args.job_id), args.study)
    if JobStatus(meta["status"]).terminal:
        return fetch_summary(client, args), None
    return live_summary(client.job_series(str(args.job_id), args.study)), meta


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
    from shoal.cli.main import connect

    client = connect(args)
    if args.follow:
        _follow(client, args)
    summary, running = job_summary(client, args)
    return _plot_result(str(args.job_id), summary, running, args)


def _chosen(job_id: str, summary: dict[str, Any], metric: str | None) -> tuple[str, list[str], Series]:
    """(the metric drawn, every metric of the job, its series); refused when there is none."""
    names, by_metric = summary_series(summary)
    if not names:
        raise ShoalError("RESULT_NOT_AVAILABLE", f"job {job_id} recorded no metric with a round yet")
    metric = metric or names[0]
    if metric not in by_metric:
        raise ShoalError(
            "INVALID_ARGS",
            f"job {job_id} recorded no metric {metric[:80]!r}",
            hint=f"Its metrics: {', '.join(names)}.",
        )
    return metric, names, by_metric[metric]


def _title(job_id: str, metric: str, running: JobMeta | None) -> str:
    title = f"job {job_id}: {metric} per round"
    if running is not None:
        prog = running.get("progress")
        total = prog.get("total_rounds") if prog is not None else None
        stats = prog.get("stats") if prog is not None else None
        done = stats.get("rounds_done") if stats is not None else None
        rounds = f", {done} of {total} rounds done" if isinstance(done, int) and total else ""
        title += f" (so far: {running['status']}{rounds})"
    return title


def _plot_result(
    job_id: str, summary: dict[str, Any], running: JobMeta | None, args: argparse.Namespace
) -> Result:
    metric, names, series = _chosen(job_id, summary, args.metric)
    data = {
        "job_id": job_id,
        "metric": metric,
        "metrics": names,
        "running": running is not None,
        "series": {who: [{"round": r, "value": v} for r, v in values] for who, values in series.items()},
    }
    title = _title(job_id, metric, running)
    if args.png:
        data["png"] = write_png(series, title, args.png)
    return Result(data, human=lambda: "\n".join([title, *draw(series, min(terminal_columns(), 100))]))


def _follow(client: AdminClient, args: argparse.Namespace) -> None:
    """``--follow``: redraw the plot in place each time the job changes (a round ends), until
    it ends; the caller then prints the finished job's plot where the last drawing was. Only
    on a terminal: a pipe would get every drawing, cursor movements and all."""
    import sys

    from shoal.cli.live import live
    from shoal.cli.output import terminal_safe

    if not live(args):
        raise ShoalError(
            "INVALID_ARGS",
            "--follow redraws the plot on a terminal; here stdout is not one (or --format json)",
            hint="Wait for the job ('shoal job wait ID'), then plot it; or plot it once as it is.",
        )
    job_id, version, drawn = str(args.job_id), -1, 0
    out = sys.stdout
    while True:
        answer = client.job_events(job_id, args.study, version, 25.0)
        if answer["version"] != version:
            version = answer["version"]
            if answer["terminal"]:
                break
            lines = _frame(client, args, job_id, answer["job"])
            out.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + terminal_safe("\n".join(lines)) + "\n")
            out.flush()
            drawn = len(lines)
    if drawn:
        out.write(f"\x1b[{drawn}F\x1b[J")
        out.flush()


def _frame(client: AdminClient, args: argparse.Namespace, job_id: str, meta: JobMeta) -> list[str]:
    """One drawing of a running job's plot, or a line saying what it waits for."""
    try:
        summary = live_summary(client.job_series(job_id, args.study))
        metric, _, series = _chosen(job_id, summary, args.metric)
    except ShoalError as err:  # not started, no round yet, or not the metric asked for yet
        if err.code not in ("JOB_NOT_RUNNING", "RESULT_NOT_AVAILABLE", "INVALID_ARGS"):
            raise
        what = f"metric {args.metric!r}" if args.metric else "the first round's metrics"
        return [f"job {job_id} ({meta['status']}): waiting for {what} ..."]
    return [_title(job_id, metric, meta), *draw(series, min(terminal_columns(), 100))]
