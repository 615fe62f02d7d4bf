"""``shoal job ...``: submit, list, meta, wait, download."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from shoal.cli.output import Result, progress, table
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUBMIT_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

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


def submit_token(value: str) -> str:
    if not SUBMIT_TOKEN_RE.match(value):
        raise argparse.ArgumentTypeError(
            "submit token must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return value


def non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return number


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def register(groups: Any) -> None:
    from shoal.cli.main import Parser, add_kit_options

    job = groups.add_parser("job", help="submit, watch and manage jobs")
    subs = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", parser_class=Parser)

    p = subs.add_parser("submit", help="submit a job folder (or .zip)")
    p.add_argument(
        "-j",
        "--job-folder",
        "--job_folder",
        dest="job_folder",
        default="./current_job",
        help="job folder or .zip holding meta.json (default: ./current_job)",
    )
    p.add_argument(
        "--submit-token",
        type=submit_token,
        default=None,
        help="caller-chosen token that makes retries of this submit safe",
    )
    p.add_argument("-debug", "--debug", action="store_true", help="keep the archive that was uploaded")
    add_kit_options(p)
    p.set_defaults(handler=cmd_submit)

    p = subs.add_parser("list", help="list jobs")
    p.add_argument("-n", "--name", default=None, help="job name prefix")
    p.add_argument("-i", "--id", dest="id_prefix", default=None, help="job id prefix")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument(
        "-m", "--max", dest="max_results", type=int, default=None, help="at most this many (newest)"
    )
    p.add_argument(
        "--submit-token", type=submit_token, default=None, help="find the job submitted with this token"
    )
    add_kit_options(p)
    p.set_defaults(handler=cmd_list)

    p = subs.add_parser("meta", help="show a job's metadata")
    p.add_argument("job_id")
    add_kit_options(p)
    p.set_defaults(handler=cmd_meta)

    p = subs.add_parser("wait", help="wait for a job and return one final result")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=non_negative, default=0.0, help="seconds to wait at most (0: no limit)")
    p.add_argument("--interval", type=positive, default=2.0, help="seconds between retries when no news came")
    add_kit_options(p)
    p.set_defaults(handler=cmd_wait)

    p = subs.add_parser("download", help="download a finished job's result")
    p.add_argument("job_id")
    p.add_argument("-o", "--output-dir", default=None, help="where to put <job_id>/ (default: .)")
    p.add_argument("--force", action="store_true", help="replace an existing download")
    add_kit_options(p)
    p.set_defaults(handler=cmd_download)


def _resolve_job_folder(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise ShoalError("JOB_FOLDER_NOT_FOUND", path=str(path))
    if path.is_dir() and not (path / "meta.json").exists():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1 and (subdirs[0] / "meta.json").exists():
            progress(f"Using job folder: {subdirs[0]}")
            return subdirs[0]
    return path


def cmd_submit(args: argparse.Namespace) -> Result:
    import shutil
    import tempfile

    from shoal.cli.main import connect
    from shoal.wire.archive import zip_folder

    source = _resolve_job_folder(args.job_folder)
    client = connect(args)
    with tempfile.TemporaryDirectory(prefix="shoal-submit-") as tmp:
        if source.is_dir():
            archive = Path(tmp) / f"{source.name}.zip"
            zip_folder(source, archive)
        else:
            archive = source
        answer = client.submit_job(archive, args.study, args.submit_token)
        if args.debug:
            kept = Path(tempfile.mkdtemp(prefix="shoal-submitted-")) / archive.name
            shutil.copy(archive, kept)
            progress(f"uploaded archive kept at {kept}")
    job_id = answer["job_id"]
    return Result({"job_id": job_id}, human=f"job_id: {job_id}")


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
    columns = [
        ("job_id", "JOB ID"),
        ("job_name", "NAME"),
        ("status", "STATUS"),
        ("submit_time", "SUBMITTED"),
        ("duration", "DURATION"),
        ("study", "STUDY"),
    ]
    return Result(jobs, human=table(jobs, columns))


def cmd_meta(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    meta = connect(args).get_job(args.job_id, args.study)
    return Result(meta, human=_meta_text(meta))


def _meta_text(meta: dict[str, Any]) -> str:
    lines = [
        f"Job ID:      {meta['job_id']}",
        f"Name:        {meta.get('name', '')}",
        f"Study:       {meta.get('study', '')}",
        f"Submitter:   {meta.get('submitter_name')} "
        f"({meta.get('submitter_role')} @ {meta.get('submitter_org')})",
        f"Status:      {meta['status']}",
    ]
    if meta.get("status_reason"):
        lines.append(f"Reason:      {meta['status_reason']}")
    lines.append(f"Submitted:   {meta.get('submit_time_iso', '')}")
    if meta.get("start_time"):
        lines.append(f"Started:     {meta['start_time']}")
    lines.append(f"Duration:    {meta.get('duration', 'N/A')}")
    lines.append(f"Min clients: {meta.get('min_clients')}")
    deploy = "; ".join(
        f"{app} -> {', '.join(sites)}" for app, sites in (meta.get("deploy_map") or {}).items()
    )
    lines.append(f"Deploy map:  {deploy}")
    progress_info = meta.get("progress")
    if progress_info and progress_info.get("current_round") is not None:
        lines.append(
            f"Round:       {progress_info['current_round'] + 1} of {progress_info.get('total_rounds')}"
        )
    if meta.get("first_error"):
        err = meta["first_error"]
        lines.append(f"First error: [{err.get('site')}] {err.get('type')}: {err.get('message')}")
    return "\n".join(lines)


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
    human = [f"Job {meta['job_id']} status: {NORMALISED.get(status, status)} ({status})"]
    if meta.get("duration_s") is not None:
        human.append(f"  Duration: {meta['duration_s']:.1f}s")
    human.append(f"  Name: {meta.get('name', '')}")
    human.append(f"  Study: {meta.get('study', '')}")
    return Result(data, human="\n".join(human))


def cmd_download(args: argparse.Namespace) -> Result:
    import shutil
    import tempfile

    from shoal.cli.artifacts import discover
    from shoal.cli.main import connect
    from shoal.wire.archive import extract_archive

    client = connect(args)
    meta = client.get_job(args.job_id, args.study)
    if meta["status"] not in NORMALISED:
        raise ShoalError(
            "JOB_NOT_DONE",
            f"current status: {meta['status']}; searched study '{args.study}'",
            job_id=meta["job_id"],
        )
    out_dir = Path(args.output_dir or ".").expanduser().resolve()
    dest = out_dir / meta["job_id"]
    if dest.exists() and not args.force:
        raise ShoalError("DOWNLOAD_EXISTS", str(dest))
    if args.format == "txt":
        progress(f"Downloading job {meta['job_id']} from study {args.study} ...")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".shoal-download-", dir=out_dir) as tmp:
            archive = Path(tmp) / "result.zip"
            client.download_result(meta["job_id"], args.study, archive)
            staged = Path(tmp) / "tree"
            extract_archive(archive, staged)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staged, dest)
    except PermissionError as exc:
        raise ShoalError("OUTPUT_DIR_NOT_WRITABLE", str(exc), path=str(out_dir)) from exc
    artifacts, missing = discover(dest)
    data = {
        "job_id": meta["job_id"],
        "download_path": str(dest),
        "path": str(dest),
        "artifact_discovery": "completed",
        "artifacts": artifacts,
        "missing_artifacts": missing,
    }
    return Result(data, human=f"Job result downloaded to: {dest}")
