"""``shoal job download``, ``abort``, ``delete`` and ``clone``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shoal.cli.job_wait import NORMALISED
from shoal.cli.output import Result, progress
from shoal.errors import ShoalError

RESULT_LIMIT = 256 * 2**30  # a downloaded result is as large as its model, not a hostile upload


def cmd_download(args: argparse.Namespace) -> Result:
    import shutil
    import tempfile

    from shoal.cli.artifacts import discover
    from shoal.cli.live import Transfer, live
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
    if os.path.lexists(dest) and (dest.is_symlink() or not dest.is_dir()):
        # --force replaces an earlier download (a folder), never a file or link of the same name
        raise ShoalError(
            "DOWNLOAD_EXISTS",
            f"{dest} is a {'link' if dest.is_symlink() else 'file'}, not a downloaded job folder",
            hint="Move that file away, or choose another --output-dir.",
        )
    if dest.exists() and not args.force:
        raise ShoalError("DOWNLOAD_EXISTS", str(dest))
    if args.format == "txt":
        progress(f"Downloading job {meta['job_id']} from study {args.study} ...")
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # to undo on failure
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".shoal-download-", dir=out_dir) as tmp:
            archive = Path(tmp) / "result.zip"
            bar = Transfer("downloading", f"job {meta['job_id']}") if live(args) else None
            try:
                client.download_result(meta["job_id"], args.study, archive, args.only, on_progress=bar)
            finally:
                if bar is not None:
                    bar.finish()
            staged = Path(tmp) / "tree"
            # the server's own result: its size is the model's, not an attacker's choice, but
            # paths are still checked (no '..', links or absolute names)
            extract_archive(archive, staged, max_member_bytes=RESULT_LIMIT, max_total_bytes=RESULT_LIMIT)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staged, dest)
    except ConnectionError:
        _remove_folders(made)
        raise  # the link, not the folder (the client reports it as CONNECTION_FAILED)
    except OSError as exc:  # no permission, not a folder, read-only or full disk, /proc, ...
        _remove_folders(made)
        raise ShoalError("OUTPUT_DIR_NOT_WRITABLE", str(exc), path=str(out_dir)) from exc
    except BaseException:  # refused (NOT_AUTHORIZED, RESULT_NOT_AVAILABLE), interrupted, ...
        _remove_folders(made)
        raise
    artifacts, missing = discover(dest)
    if args.only is not None:  # what was not asked for is not missing
        asked = {"global_model": "model", "metrics_summary": "metrics", "client_logs": "logs"}
        missing = [m for m in missing if asked.get(m) in args.only]
    data = {
        "job_id": meta["job_id"],
        "download_path": str(dest),
        "path": str(dest),
        "artifact_discovery": "completed",
        "artifacts": artifacts,
        "missing_artifacts": missing,
        "only": args.only,
    }
    return Result(data, human=f"Job result downloaded to: {dest}")


def _remove_folders(made: list[Path]) -> None:
    """Undo the ``mkdir -p`` of a download that failed: a refusal changes nothing on disk.
    ``made`` is deepest first; only empty folders go, one something else filled stays."""
    for folder in made:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # the mkdir stopped before it
        except OSError:
            return


def cmd_abort(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect
    from shoal.cli.output import confirm

    client = connect(args)
    if not confirm(f"Abort job '{args.job_id}' in study '{args.study}'?", args.force):
        return Result({"job_id": args.job_id, "cancelled": True}, human="Not aborted.")
    if args.format == "txt":
        progress(f"Aborting job {args.job_id} ...")
    answer = client.abort_job(args.job_id, args.study)
    data = {"job_id": answer["job_id"], "status": answer["status"], "reason": answer.get("reason", "")}
    return Result(data, human=f"job_id: {data['job_id']}\nstatus: {data['status']}\nreason: {data['reason']}")


def cmd_delete(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect
    from shoal.cli.output import confirm

    client = connect(args)
    if not confirm(f"Delete job '{args.job_id}' in study '{args.study}'?", args.force):
        return Result({"job_id": args.job_id, "cancelled": True}, human="Not deleted.")
    data = client.delete_job(args.job_id, args.study)
    return Result(data, human=f"deleted job {data['job_id']}")


def cmd_clone(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    data = connect(args).clone_job(args.job_id, args.study)
    return Result(data, human=f"source_job_id: {data['source_job_id']}\nnew_job_id: {data['new_job_id']}")
