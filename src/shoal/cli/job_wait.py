"""``shoal job wait`` and ``shoal job monitor``: one final answer, or a stream of progress."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, number_text, progress
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from shoal.api.answers import JobMeta, JobStats
    from shoal.cli.live import StatusLine

NORMALISED = {
    "FINISHED_OK": "COMPLETED",
    "FINISHED_EXCEPTION": "FAILED",
    "FAILED": "FAILED",
    "ABORTED": "ABORTED",
    "ABANDONED": "ABANDONED",
}
FAILURE_CODES = {
    "FAILED": "JOB_FAILED",
    "FINISHED_EXCEPTION": "JOB_FINISHED_EXCEPTION",
    "ABORTED": "JOB_ABORTED",
    "ABANDONED": "JOB_ABANDONED",
}
SUMMARY_KEYS = (
    "job_name",
    "status",
    "status_reason",
    "submit_time_iso",
    "start_time",
    "end_time",
    "duration",
    "study",
    "submitter_name",
    "submitter_org",
    "submitter_role",
    "first_error",
)


def summary(meta: Mapping[str, object]) -> dict[str, Any]:
    return {k: meta[k] for k in SUMMARY_KEYS if meta.get(k) not in (None, "")}


def cmd_wait(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    client = connect(args)
    if args.format == "txt":
        progress(f"Waiting for job {args.job_id} in study {args.study} ...")
    finished, meta = client.wait_job(args.job_id, args.study, timeout=args.timeout, interval=args.interval)
    status = meta["status"]
    data = {
        "job_id": meta["job_id"],
        "status": status,
        "duration_s": meta.get("duration_s"),
        "job_meta": summary(meta),
        "last_stats": last_metrics(meta) or None,
    }
    if not finished:
        raise ShoalError("TIMEOUT", f"job {args.job_id} did not finish within {args.timeout:g}s", data=data)
    if status != "FINISHED_OK":
        raise ShoalError(
            FAILURE_CODES.get(status, "JOB_FAILED"),
            meta.get("status_reason") or None,
            data=data,
            job_id=meta["job_id"],
            status=status,
        )
    return Result(data, human=lambda: _wait_text(meta))


def last_metrics(meta: JobMeta) -> dict[str, float | None]:
    """The metrics of the job's last round, {} before any (or once the server forgot them)."""
    progress = meta.get("progress")
    return (progress.get("last_metrics") if progress is not None else None) or {}


def _wait_text(meta: JobMeta) -> str:
    status = meta["status"]
    human = [f"Job {meta['job_id']} status: {NORMALISED.get(status, status)} ({status})"]
    if meta.get("duration_s") is not None:
        human.append(f"  Duration: {number_text(meta['duration_s'], '.1f')}s")
    human.append(f"  Name: {meta.get('name', '')}")
    human.append(f"  Study: {meta.get('study', '')}")
    return "\n".join(human)


DEFAULT_METRICS = ("loss", "accuracy")


def _pick_metrics(meta: JobMeta, stats: JobStats | None, args: argparse.Namespace) -> dict[str, Any]:
    """The metrics a monitor line shows: the round, then server-aggregated and/or site metrics."""
    prog = meta.get("progress")
    extra = list(args.metric or [])
    wanted = list(DEFAULT_METRICS) + extra
    out: dict[str, Any] = {}
    current = prog.get("current_round") if prog is not None else None
    if current is not None:
        out["round"] = current + 1
    server_metrics = last_metrics(meta)
    if args.stats_target in ("server", "all"):
        for key in wanted:
            if key in server_metrics:
                out[key] = server_metrics[key]
    if stats:
        # A metric asked for by name is shown wherever it is (a site's log_metric), whatever
        # --stats-target says; the defaults follow --stats-target.
        per_site = wanted if args.stats_target in ("client", "all") else extra
        for site, info in (stats.get("sites") or {}).items():
            for key in per_site:
                if key in (info.get("metrics") or {}):
                    out[f"{site}.{key}"] = info["metrics"][key]
    return out


def _elapsed(meta: JobMeta, started: float) -> float:
    import time

    seconds = meta.get("duration_s")
    return round(float(seconds) if seconds is not None else time.monotonic() - started, 1)


def cmd_monitor(args: argparse.Namespace) -> Result:
    """Follow a job: the server pushes each change (long poll), we print it; exit codes as wait."""
    import time

    from shoal.cli.main import connect
    from shoal.cli.output import emit_event, error_event

    jsonl = args.format == "jsonl"
    started = time.monotonic()
    deadline = started + args.timeout if args.timeout > 0 else None
    version, meta = -1, None
    shown = Shown()
    if args.format == "txt":
        from shoal.cli.live import StatusLine, live

        shown.line = StatusLine() if live(args) else None
    # On a terminal the line's clock moves: the server answers at least every LIVE_TICK s.
    longest = 25.0 if shown.line is None else LIVE_TICK
    try:
        client = connect(args)
        while True:
            hold = longest if deadline is None else max(0.0, min(longest, deadline - time.monotonic()))
            answer = client.job_events(args.job_id, args.study, version, hold)
            changed = answer["version"] != version
            version, meta = answer["version"], answer["job"]
            stats = None
            if (args.stats_target != "server" or args.metric) and not answer["terminal"]:
                try:
                    stats = client.job_stats(args.job_id, args.study)
                except ShoalError:
                    stats = None
            metrics = _pick_metrics(meta, stats, args)
            status = meta["status"]
            if answer["terminal"]:
                return _monitor_terminal(meta, metrics, started, jsonl, shown)
            if changed or shown.line is not None:
                _monitor_progress(meta, metrics, started, jsonl, emit_event, shown)
            if deadline is not None and time.monotonic() >= deadline:
                raise ShoalError(
                    "TIMEOUT",
                    f"job {args.job_id} did not finish within {args.timeout:g}s",
                    data={"job_id": args.job_id, "status": "TIMEOUT", "job_status": status},
                )
            if not changed and shown.line is None:
                time.sleep(min(args.interval, 1.0))
    except ShoalError as err:
        if not jsonl:
            raise
        if err.code == "TIMEOUT":
            event: dict[str, Any] = {
                "event": "terminal",
                "job_id": args.job_id,
                "status": "TIMEOUT",
                "terminal": True,
                "timeout_seconds": args.timeout,
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            if meta is not None:
                event.update(job_status=meta["status"], job_meta=summary(meta))
            emit_event(event)
        else:
            emit_event(error_event(err))
        return Result(None, exit_code=err.exit_code)
    finally:
        if shown.line is not None:  # the last state stays on the screen, what follows below it
            shown.line.done()


#: Seconds between two redraws of monitor's live line (its clock) when nothing changed.
LIVE_TICK = 1.0


class Shown:
    """What the human view of monitor printed last: a line is printed only when what it says
    changed (not for every event, nor for elapsed time alone), and each notice once. On a
    terminal (``line``) the state is one line redrawn in place, with a bar of the rounds."""

    def __init__(self) -> None:
        self.said = ""
        self.notices: set[str] = set()
        self.line: StatusLine | None = None

    def say(self, text: str) -> None:
        """A line that stays (a notice): above the live line on a terminal."""
        if self.line is not None:
            self.line.above(text)
        else:
            progress(text)

    def new_notices(self, meta: JobMeta) -> list[str]:
        fresh = [n for n in meta.get("notices") or [] if n not in self.notices]
        self.notices.update(fresh)
        return fresh


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _rounds(meta: JobMeta) -> tuple[int | None, int | None, int | None, int | None]:
    """(round under way from 1, total rounds, rounds done, the round last_metrics belong to
    from 1) as far as the server knows them."""
    prog = meta.get("progress")
    if prog is None:
        return None, None, None, None
    current, total = prog.get("current_round"), prog.get("total_rounds")
    done = prog["stats"].get("rounds_done") if "stats" in prog else None
    of = prog.get("last_metrics_round")
    return (
        current + 1 if isinstance(current, int) else None,
        total if isinstance(total, int) else None,
        done if isinstance(done, int) else None,
        of + 1 if isinstance(of, int) else None,
    )


def _time_left(meta: JobMeta, elapsed: float) -> float | None:
    """The rounds to go at the pace of the rounds done so far; None before the first ends."""
    _, total, done, _ = _rounds(meta)
    if not total or not done or meta.get("duration_s") is None:
        return None
    return elapsed / done * max(0, total - done)


def _metric_words(metrics: dict[str, Any], metrics_round: int | None) -> str:
    """``loss=0.13 (round 2)``: the metrics without the round under way, labelled with the
    round they come from (the round under way has none yet)."""
    server = " ".join(f"{k}={number_text(v)}" for k, v in metrics.items() if k != "round" and "." not in k)
    if server and metrics_round is not None:
        server += f" (round {metrics_round})"
    sites = " ".join(f"{k}={number_text(v)}" for k, v in metrics.items() if "." in k)  # site.key: live
    return " ".join(w for w in (server, sites) if w)


def _monitor_progress(
    meta: JobMeta, metrics: dict[str, Any], started: float, jsonl: bool, emit: Any, shown: Shown
) -> None:
    status = meta["status"]
    current, total, done, metrics_round = _rounds(meta)
    elapsed = _elapsed(meta, started)
    if jsonl:
        event: dict[str, Any] = {
            "event": "progress",
            "job_id": meta["job_id"],
            "status": NORMALISED.get(status, status),
            "job_status": status,
            "terminal": False,
            "elapsed_s": elapsed,
            "round": current,
            "total_rounds": total,
            "rounds_done": done,
            "job_meta": summary(meta),
        }
        left = _time_left(meta, elapsed)
        if left is not None:
            event["time_left_s"] = round(left, 1)
        if metrics:
            event["metrics"] = metrics
            event["metrics_round"] = metrics_round
        if meta.get("notices"):
            event["notices"] = meta["notices"]
        emit(event)
        return
    prog = meta.get("progress")
    sites = (prog.get("sites") if prog is not None else None) or {}
    parts = [status]
    if current is not None:
        parts.append(f"round {current}/{total}" if total else f"round {current}")
    words = _metric_words(metrics, metrics_round)
    if words:
        parts.append(words)
    if sites:
        parts.append("sites: " + ", ".join(f"{s}={st}" for s, st in sorted(sites.items())))
    if meta.get("status_reason") and status == "SUBMITTED":
        parts.append(f"({meta['status_reason']})")
    line = " ".join(parts)
    left = _time_left(meta, elapsed)
    for text in shown.new_notices(meta):
        shown.say(f"job {meta['job_id']} notice: {text}")
    if shown.line is not None:
        from shoal.cli.output import terminal_columns

        shown.line.show(_live_text(meta, words, sites, elapsed, left, terminal_columns() - 1))
    elif line != shown.said:
        shown.said = line
        clock = f"elapsed {_clock(elapsed)}" + (f", about {_clock(left)} left" if left is not None else "")
        progress(f"job {meta['job_id']} {line} [{clock}]")


def _live_text(
    meta: JobMeta, words: str, sites: dict[str, Any], elapsed: float, left: float | None, width: int
) -> str:
    """Monitor's line on a terminal, most telling first (the terminal's width cuts its end):
    ``job 3151075053088038 RUNNING round 3/5 [########------------] 2 done 0:00:12 (~0:00:09
    left) loss=0.13 (round 2) site-1=running site-2=running``, the sites counted by state when
    they do not fit in ``width``."""
    from shoal.cli.live import bar

    current, total, done, _ = _rounds(meta)
    parts = [f"job {meta['job_id']}", meta["status"]]
    if current is not None:
        parts.append(f"round {current}/{total}" if total else f"round {current}")
    if total:
        parts.append(f"{bar((done or 0) / total)} {done or 0} done")
    parts.append(_clock(elapsed) + (f" (~{_clock(left)} left)" if left is not None else ""))
    if words:
        parts.append(words)
    if meta.get("status_reason") and meta["status"] == "SUBMITTED":
        parts.append(f"({meta['status_reason']})")
    return " ".join([*parts, _site_states(sites, width - len(" ".join(parts)) - 1)])


def _site_states(sites: dict[str, Any], room: int) -> str:
    """Each site's state (``site-1=running site-2=done``) if it fits in ``room`` characters,
    else how many sites are in each state (``sites: running 38, done 2``): with many sites the
    line would be cut before the sites that are behind."""
    each = " ".join(f"{s}={st}" for s, st in sorted(sites.items()))
    if len(each) <= room:
        return each
    counts: dict[str, int] = {}
    for state in sites.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    return "sites: " + ", ".join(
        f"{state} {n}" for state, n in sorted(counts.items(), key=lambda c: (-c[1], c[0]))
    )


def _monitor_terminal(
    meta: JobMeta, metrics: dict[str, Any], started: float, jsonl: bool, shown: Shown
) -> Result:
    from shoal.cli.output import emit_event

    status = meta["status"]
    code = None if status == "FINISHED_OK" else FAILURE_CODES.get(status, "JOB_FAILED")
    data = {
        "job_id": meta["job_id"],
        "status": status,
        "duration_s": meta.get("duration_s"),
        "job_meta": summary(meta),
        "last_stats": metrics or None,
        "stats_raw": meta.get("progress"),
        "notices": meta.get("notices") or [],
    }
    if jsonl:
        event: dict[str, Any] = {
            "event": "terminal",
            "job_id": meta["job_id"],
            "status": NORMALISED.get(status, status),
            "job_status": status,
            "terminal": True,
            "duration_s": meta.get("duration_s"),
            "job_meta": summary(meta),
            "metrics": metrics or None,
            "notices": meta.get("notices") or [],
        }
        if code:
            event["error_code"] = code
        emit_event(event)
        return Result(None, exit_code=0 if code is None else 1)
    if shown.line is not None:
        shown.line.clear()  # the summary (or the error) says where the job ended
    if code is not None:
        for text in shown.new_notices(meta):  # said before the error (a success's summary has them)
            progress(f"job {meta['job_id']} notice: {text}")
        raise ShoalError(
            code, meta.get("status_reason") or None, data=data, job_id=meta["job_id"], status=status
        )

    def human() -> str:
        lines = [f"Job {meta['job_id']} status: COMPLETED ({status})"]
        if meta.get("duration_s") is not None:
            lines.append(f"  Duration: {number_text(meta['duration_s'], '.1f')}s")
        lines.append(f"  Name: {meta.get('name', '')}")
        _, total, done, metrics_round = _rounds(meta)
        if done is not None:
            lines.append(f"  Rounds: {done}" + (f" of {total}" if total else ""))
        words = _metric_words(metrics, metrics_round)
        if words:
            lines.append(f"  Metrics: {words}")
        lines += [f"  Notice: {text}" for text in meta.get("notices") or []]
        return "\n".join(lines)

    return Result(data, human=human)
