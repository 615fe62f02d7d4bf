"""``shoal job wait`` and ``shoal job monitor``: one final answer, or a stream of progress."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, number_text, progress
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def summary(meta: dict[str, Any]) -> dict[str, Any]:
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
        "last_stats": (meta.get("progress") or {}).get("last_metrics") or None,
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


def _wait_text(meta: dict[str, Any]) -> str:
    status = meta["status"]
    human = [f"Job {meta['job_id']} status: {NORMALISED.get(status, status)} ({status})"]
    if meta.get("duration_s") is not None:
        human.append(f"  Duration: {number_text(meta['duration_s'], '.1f')}s")
    human.append(f"  Name: {meta.get('name', '')}")
    human.append(f"  Study: {meta.get('study', '')}")
    return "\n".join(human)


DEFAULT_METRICS = ("loss", "accuracy")


def _pick_metrics(
    meta: dict[str, Any], stats: dict[str, Any] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """The metrics a monitor line shows: the round, then server-aggregated and/or site metrics."""
    prog = meta.get("progress") or {}
    wanted = list(DEFAULT_METRICS) + list(args.metric or [])
    out: dict[str, Any] = {}
    if prog.get("current_round") is not None:
        out["round"] = prog["current_round"] + 1
    if args.stats_target in ("server", "all"):
        for key in wanted:
            if key in (prog.get("last_metrics") or {}):
                out[key] = prog["last_metrics"][key]
    if stats and args.stats_target in ("client", "all"):
        for site, info in (stats.get("sites") or {}).items():
            for key in wanted:
                if key in (info.get("metrics") or {}):
                    out[f"{site}.{key}"] = info["metrics"][key]
    return out


def _elapsed(meta: dict[str, Any], started: float) -> float:
    import time

    if meta.get("duration_s") is not None:
        return round(float(meta["duration_s"]), 1)
    return round(time.monotonic() - started, 1)


def cmd_monitor(args: argparse.Namespace) -> Result:
    """Follow a job: the server pushes each change (long poll), we print it; exit codes as wait."""
    import time

    from shoal.cli.main import connect
    from shoal.cli.output import emit_event, error_event

    jsonl = args.format == "jsonl"
    started = time.monotonic()
    deadline = started + args.timeout if args.timeout > 0 else None
    version, meta = -1, None
    try:
        client = connect(args)
        while True:
            hold = 25.0 if deadline is None else max(0.0, min(25.0, deadline - time.monotonic()))
            answer = client.job_events(args.job_id, args.study, version, hold)
            changed = answer["version"] != version
            version, meta = answer["version"], answer["job"]
            stats = None
            if args.stats_target != "server" and not answer["terminal"]:
                try:
                    stats = client.job_stats(args.job_id, args.study)
                except ShoalError:
                    stats = None
            metrics = _pick_metrics(meta, stats, args)
            status = meta["status"]
            if answer["terminal"]:
                return _monitor_terminal(meta, metrics, started, jsonl)
            if changed:
                _monitor_progress(meta, metrics, started, jsonl, emit_event)
            if deadline is not None and time.monotonic() >= deadline:
                raise ShoalError(
                    "TIMEOUT",
                    f"job {args.job_id} did not finish within {args.timeout:g}s",
                    data={"job_id": args.job_id, "status": "TIMEOUT", "job_status": status},
                )
            if not changed:
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


def _monitor_progress(
    meta: dict[str, Any], metrics: dict[str, Any], started: float, jsonl: bool, emit: Any
) -> None:
    status = meta["status"]
    if jsonl:
        event: dict[str, Any] = {
            "event": "progress",
            "job_id": meta["job_id"],
            "status": NORMALISED.get(status, status),
            "job_status": status,
            "terminal": False,
            "elapsed_s": _elapsed(meta, started),
            "job_meta": summary(meta),
        }
        if metrics:
            event["metrics"] = metrics
        emit(event)
        return
    sites = (meta.get("progress") or {}).get("sites") or {}
    parts = [f"status: {status}", f"elapsed_s: {_elapsed(meta, started)}"]
    if metrics:
        parts.append("metrics: " + " ".join(f"{k}={number_text(v)}" for k, v in metrics.items()))
    if sites:
        parts.append("sites: " + ", ".join(f"{s}={st}" for s, st in sorted(sites.items())))
    if meta.get("status_reason") and status == "SUBMITTED":
        parts.append(f"({meta['status_reason']})")
    progress(f"job {meta['job_id']} " + " ".join(parts))


def _monitor_terminal(meta: dict[str, Any], metrics: dict[str, Any], started: float, jsonl: bool) -> Result:
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
        }
        if code:
            event["error_code"] = code
        emit_event(event)
        return Result(None, exit_code=0 if code is None else 1)
    if code is not None:
        raise ShoalError(
            code, meta.get("status_reason") or None, data=data, job_id=meta["job_id"], status=status
        )

    def human() -> str:
        lines = [f"Job {meta['job_id']} status: COMPLETED ({status})"]
        if meta.get("duration_s") is not None:
            lines.append(f"  Duration: {number_text(meta['duration_s'], '.1f')}s")
        lines.append(f"  Name: {meta.get('name', '')}")
        if metrics:
            lines.append("  Metrics: " + " ".join(f"{k}={number_text(v)}" for k, v in metrics.items()))
        return "\n".join(lines)

    return Result(data, human=human)
