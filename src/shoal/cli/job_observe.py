"""``shoal job logs``, ``log-config`` and ``stats``: looking into a job while it runs and after."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime

from shoal.cli.output import Result, progress
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from shoal.api.answers import JobStats
    from shoal.api.client import AdminClient

DEFAULT_TAIL = 500
_TS = re.compile(r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)")


def parse_when(value: str) -> datetime:
    """ISO-like timestamps; 'Z' and offsets become UTC, naive values are taken as they are."""
    text = value.strip().replace(",", ".").replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a timestamp: {value!r} (use YYYY-MM-DDTHH:MM:SS)") from exc
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def since_filter(text: str, since: datetime) -> tuple[str, bool]:
    """Keep lines at or after ``since``; lines without a timestamp follow the line before them."""
    keep = False
    seen = False
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("{"):  # a JSON record: its own time decides; no time, no line
            stamp = _record_time(line)
            keep = stamp is not None and stamp >= since
            seen = seen or stamp is not None
            if keep:
                out.append(line)
            continue
        m = _TS.match(line)
        if m:
            try:
                keep = parse_when(m.group(1)) >= since
                seen = True
            except argparse.ArgumentTypeError:
                pass
        if keep:
            out.append(line)
    return ("".join(out), True) if seen else (text, False)


def _record_time(line: str) -> datetime | None:
    import json

    try:
        record = json.loads(line)
        raw = record.get("asctime") or record.get("timestamp") or record.get("time")
        return parse_when(str(raw)) if raw else None
    except (ValueError, AttributeError, argparse.ArgumentTypeError):
        return None


def bound(text: str, tail: int | None, max_bytes: int | None) -> tuple[str, bool]:
    """Apply --tail then --max-bytes; report whether anything was cut."""
    cut = False
    if tail is not None:
        lines = text.splitlines(keepends=True)
        if len(lines) > tail:
            text, cut = "".join(lines[len(lines) - tail :]) if tail else "", True
    if max_bytes is not None:
        raw = text.encode()
        if len(raw) > max_bytes:
            text, cut = (raw[len(raw) - max_bytes :].decode("utf-8", "ignore") if max_bytes else ""), True
    return text, cut


def cmd_logs(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    client = connect(args)
    if args.follow:
        return _follow_logs(client, args)
    # JSON output prefers the structured log.json, people the plain log.txt (as printed; with
    # --timestamps the records, each line with its time); each site falls back to the other
    # file when its preferred one was not stored (a running job's sites stream their records).
    records_first = args.format == "json" or args.timestamps
    preferred, other = ("log.json", "log.txt") if records_first else ("log.txt", "log.json")
    answer = client.job_logs(args.job_id, args.study, args.site, preferred)
    fallback: set[str] = set()
    if answer.get("unavailable"):
        second = client.job_logs(args.job_id, args.study, args.site, other)
        for site in list(answer["unavailable"]):
            if site in second["logs"]:
                answer["logs"][site] = second["logs"][site]
                answer.setdefault("capped", {})[site] = second.get("capped", {}).get(site, False)
                del answer["unavailable"][site]
                fallback.add(site)
    files = {site: other if site in fallback else preferred for site in answer["logs"]}
    if args.format != "json":  # people read records as lines: time - message
        for site, file_name in files.items():
            if file_name == "log.json":
                answer["logs"][site] = records_as_text(answer["logs"][site])
    explicit = args.tail is not None or args.since is not None or args.max_bytes is not None
    tail = args.tail if explicit else DEFAULT_TAIL
    logs: dict[str, str] = {}
    sites: dict[str, dict[str, Any]] = {}
    any_cut = False
    since_applied = False
    for site, text in answer["logs"].items():
        if args.since is not None:
            text, applied = since_filter(text, args.since)
            since_applied = since_applied or applied
        text, cut = bound(text, tail, args.max_bytes)
        cut = cut or bool(answer.get("capped", {}).get(site))
        any_cut = any_cut or cut
        logs[site] = text
        sites[site] = {
            "available": True,
            "lines": len(text.splitlines()),
            "bytes": len(text.encode()),
            "logs_truncated": cut,
        }
    for site, reason in answer.get("unavailable", {}).items():
        sites[site] = {"available": False, "reason": reason}
    data: dict[str, Any] = {
        "job_id": answer["job_id"],
        "target": args.site,
        "log_files": files,
        "logs": logs,
        "logs_truncated": any_cut,
        "sites": sites,
        "filters": {
            "tail": tail,
            "since": args.since.isoformat() if args.since else None,
            "since_applied": since_applied,
            "max_bytes": args.max_bytes,
            "default_tail_applied": not explicit,
        },
    }
    if answer.get("unavailable"):
        data["unavailable"] = answer["unavailable"]
        if args.format == "txt":
            progress("Unavailable logs:")
            for site, reason in sorted(answer["unavailable"].items()):
                progress(f"{site}: {reason}")
    if len(logs) == 1 and not answer.get("unavailable"):
        human = next(iter(logs.values()))
    else:
        human = logs_by_site(logs)
    return Result(data, human=human)


def logs_by_site(logs: dict[str, str]) -> str:
    """Several logs in one text: every line starts with the name of the site (or server) it
    came from. No header marks where a log begins, so no line a site writes can pass for the
    start of another's: its own lines always carry its own name, and a line break inside them
    is either a real one (prefixed too) or shown escaped."""
    width = max((len(site) for site in logs), default=0)
    lines = []
    for site, text in logs.items():
        own = text.rstrip("\n").split("\n") if text.strip() else ["(no log content)"]
        lines += [f"{site:<{width}} | {line}" for line in own]
    return "\n".join(lines)


FOLLOW_INTERVAL = 1.0  # seconds between looks at a followed job's logs


def _follow_logs(client: AdminClient, args: argparse.Namespace) -> Result:
    """``job logs --follow``: print each new line (with its time) as it reaches the server,
    until the job ends; then what the sites uploaded at their end, and exit 0. Human text only:
    a script that wants records reads ``--format json`` once the job has ended."""
    import time

    from shoal.cli.output import write_human
    from shoal.wire.status import JobStatus

    if args.format != "txt":
        raise ShoalError("INVALID_ARGS", "--follow prints text as it comes; use it without --format json")
    printed: dict[str, int] = {}  # site -> characters of its rendered log printed so far
    while True:
        status = client.get_job(args.job_id, args.study)["status"]
        ended = JobStatus(status).terminal
        answer = client.job_logs(args.job_id, args.study, args.site, "log.json")
        names = [*answer["logs"], *(answer.get("unavailable") or {})]
        width = max(map(len, names)) if len(names) > 1 else 0  # several: lines carry their site
        for site, text in answer["logs"].items():
            rendered = records_as_text(text)
            fresh = rendered[printed.get(site, 0) :]
            printed[site] = len(rendered)
            if fresh and width:
                fresh = "".join(f"{site:<{width}} | {line}" for line in fresh.splitlines(keepends=True))
            if fresh:  # escaped as all human text is (shoal.cli.output.write_human)
                write_human(fresh)
                sys.stdout.flush()
        if ended:
            return Result({"job_id": args.job_id, "status": status}, human=None)
        time.sleep(FOLLOW_INTERVAL)


def records_as_text(text: str) -> str:
    """JSON log records rendered as readable lines: time - name - level - message."""
    import json

    lines = []
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            lines.append(raw)
            continue
        parts = [record.get(k) for k in ("asctime", "name", "levelname", "message")]
        lines.append(" - ".join(str(p) for p in parts if p))
    return "\n".join(lines) + ("\n" if lines else "")


def cmd_log_config(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    if not args.level:
        raise ShoalError("LOG_CONFIG_INVALID", "give a level or mode")
    data = connect(args).log_config(args.job_id, args.study, args.level, args.site)
    applied = ", ".join(f"{k}: {v}" for k, v in data["applied"].items())
    return Result(data, human=f"job {data['job_id']}: log setting {data['setting']} -> {applied}")


def cmd_stats(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    data = connect(args).job_stats(args.job_id, args.study, args.site)
    return Result(data, human=lambda: _stats_text(data))


def _stats_text(data: JobStats) -> str:
    """The human view of ``job stats``; built only for text output (JSON prints the data).
    It says what the JSON says: the round as ``round`` (from 1), the metrics with the round
    they belong to, and every site's metrics."""
    from shoal.cli.output import number_text

    lines = [f"job {data.get('job_id')} ({data.get('status')})"]
    server = data.get("server")
    if server:
        rnd = server.get("round")
        lines.append(
            f"  server: round {rnd if isinstance(rnd, int) else '-'} of {server.get('total_rounds')}, "
            f"rounds done {server.get('rounds_done')}, "
            f"tasks sent {server.get('tasks_sent')}, results {server.get('results_received')}, "
            f"bytes out {server.get('bytes_to_sites')}, bytes in {server.get('bytes_from_sites')}"
        )
        if server.get("last_metrics"):
            metrics = " ".join(f"{k}={number_text(v)}" for k, v in server["last_metrics"].items())
            lines.append(f"  metrics{of_round(server.get('last_metrics_round'))}: {metrics}")
    for site, info in (data.get("sites") or {}).items():
        lines.append(
            f"  {site}: {info.get('status')} tasks {info.get('tasks', 0)} results {info.get('results', 0)}"
        )
        if info.get("metrics"):
            lines.append("    " + " ".join(f"{k}={number_text(v)}" for k, v in info["metrics"].items()))
    return "\n".join(lines)


def of_round(last_round: Any) -> str:
    """The words " of round N" for metrics of round N (sent counted from 0), or nothing."""
    return f" of round {last_round + 1}" if isinstance(last_round, int) else ""
