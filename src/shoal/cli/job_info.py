"""``shoal job list`` and ``shoal job meta``: what the server knows of a study's jobs, and how
people read it (a table of jobs; one labelled field a line for a job's meta, with its progress,
privacy spent and first error).

The JSON forms are the server's answers as they are; only the text views are built here, so the
renderers sit beside the two commands they serve. Loaded only when one of them runs (cli/job.py
registers them lazily).
"""

from __future__ import annotations

from shoal.cli.output import Result, labelled, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from shoal.api.answers import JobMeta, JobRow


def cmd_list(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    jobs = connect(args).list_jobs(
        args.study,
        name=args.name,
        id_prefix=args.id_prefix,
        reverse=args.reverse,
        max_results=args.max_results,
        submit_token=args.submit_token,
    )
    return Result(jobs, human=lambda: _list_text(jobs))


def _list_text(jobs: list[JobRow]) -> str:
    """The jobs as the CLI's one table (as ``shoal ls`` shows runs): times to the second in
    UTC, durations as HH:MM:SS; ids and statuses are never cut, names are when space is short."""
    from shoal.cli.output import clock, utc_stamp

    rows = [
        {
            **job,
            "submitted": utc_stamp(job.get("submit_time")),
            "elapsed": clock(job["duration_s"]) if job.get("duration_s") is not None else "N/A",
        }
        for job in jobs
    ]
    columns = [
        ("job_id", "JOB ID"),
        ("job_name", "NAME"),
        ("status", "STATUS"),
        ("submitted", "SUBMITTED"),
        ("elapsed", "DURATION"),
        ("study", "STUDY"),
    ]
    return table(rows, columns, fit=("job_name", "study"))


def cmd_meta(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    meta = connect(args).get_job(args.job_id, args.study)
    return Result(meta, human=lambda: _meta_text(meta))


def _meta_text(meta: JobMeta) -> str:
    """The human view of a job's meta: one labelled field a line (a value's own line breaks
    are indented under it, never at a label's place: shoal.cli.output.labelled)."""
    fields: list[tuple[str, object]] = [
        ("Job ID:", meta["job_id"]),
        ("Name:", meta.get("name", "")),
        ("Study:", meta.get("study", "")),
        (
            "Submitter:",
            f"{meta.get('submitter_name')} ({meta.get('submitter_role')} @ {meta.get('submitter_org')})",
        ),
        ("Status:", meta["status"]),
    ]
    if meta.get("status_reason"):
        fields.append(("Reason:", meta["status_reason"]))
    fields.append(("Submitted:", meta.get("submit_time_iso", "")))
    if meta.get("start_time"):
        fields.append(("Started:", meta["start_time"]))
    if meta.get("end_time"):
        fields.append(("Ended:", meta["end_time"]))
    fields.append(("Duration:", meta.get("duration", "N/A")))
    fields.append(("Min clients:", meta.get("min_clients")))
    deploy = "; ".join(
        f"{app} -> {', '.join(sites)}" for app, sites in (meta.get("deploy_map") or {}).items()
    )
    fields.append(("Deploy map:", deploy))
    progress_info = meta.get("progress")
    current = progress_info.get("current_round") if progress_info is not None else None
    if progress_info is not None and isinstance(current, int):
        fields.append(("Round:", f"{current + 1} of {progress_info.get('total_rounds')}"))
    if progress_info is not None and progress_info.get("last_metrics"):
        from shoal.cli.job_observe import of_round
        from shoal.cli.output import number_text

        values = " ".join(f"{k}={number_text(v)}" for k, v in progress_info["last_metrics"].items())
        final = "final" if meta.get("end_time") else "latest"
        fields.append(("Metrics:", f"{values} ({final}{of_round(progress_info.get('last_metrics_round'))})"))
    if isinstance(meta.get("privacy_spent"), dict):
        fields.append(("Privacy:", _privacy_text(meta["privacy_spent"])))
    err = meta.get("first_error")
    if err:
        fields.append(("First error:", f"[{err.get('site')}] {err.get('type')}: {err.get('message')}"))
    fields += [("Notice:", text) for text in meta.get("notices") or []]
    return "\n".join(labelled(label, value) for label, value in fields)


def _privacy_text(spent: dict[str, Any]) -> str:
    """The privacy a job spent, on one line: the job's epsilon at its delta, then each site's and
    the central one ("none" where there is no finite guarantee), then per-example DP-SGD's
    (another kind of guarantee, kept apart)."""

    def eps(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, int | float) and not isinstance(value, bool) else "none"

    parts = [f"epsilon {eps(spent.get('epsilon'))} at delta {spent.get('delta')}"]
    found = spent.get("sites")
    sites: dict[str, Any] = found if isinstance(found, dict) else {}
    if sites:
        each = ", ".join(f"{s} {eps((v or {}).get('epsilon'))}" for s, v in sorted(sites.items()))
        parts.append(f"sites: {each}")
    if spent.get("central_epsilon") is not None:
        parts.append(f"central: {eps(spent.get('central_epsilon'))}")
    if "example_epsilon" in spent:
        each = ", ".join(f"{s} {eps((v or {}).get('example_epsilon'))}" for s, v in sorted(sites.items()))
        parts.append(f"per example (DP-SGD): {eps(spent.get('example_epsilon'))} ({each})")
    return "; ".join(parts)
