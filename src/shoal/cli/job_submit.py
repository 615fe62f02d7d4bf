"""``shoal job submit``: find the job folder or zip that ``-j`` names, check it as the server
would, then zip and upload it (and with ``--wait``, wait for the job as ``job wait`` does).

The local checks are kept together here because they are the command's whole promise that a
refused job costs no upload: a path that is not a folder or a regular zip (a pipe would hang the
upload, a device never end), an app project given where a job folder is wanted, or no meta.json
where the server looks for one, each fail with the catalogue's code before anything is zipped or
sent. Loaded only when ``job submit`` runs (cli/job.py registers it lazily).
"""

from __future__ import annotations

from shoal.cli.job_args import DEFAULT_JOB_FOLDER
from shoal.cli.output import Result, progress
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path


def _resolve_job_folder(raw: str | None) -> Path:
    """The folder or zip to upload, refused here when the server would refuse it for its
    shape: not a folder or a zip (a pipe would hang the upload, a device never end), or no
    meta.json where the server looks for one. Nothing is zipped or sent before this passes."""
    from pathlib import Path  # only submit pays for it (decisions/0004)

    if raw is None:  # no -j: the default folder, and a message that says it was looked for
        raw = DEFAULT_JOB_FOLDER
        if not Path(raw).exists():
            raise ShoalError(
                "JOB_FOLDER_NOT_FOUND",
                f"no -j given, and no {raw} here ({Path.cwd()}) to take by default",
                hint="Pass -j with a job folder (one holding meta.json) or a .zip of one; "
                "an app project runs with 'shoal run DIR'.",
                path=raw,
            )
    path = Path(raw).expanduser()
    if not path.exists():
        raise ShoalError("JOB_FOLDER_NOT_FOUND", path=str(path))
    if path.is_dir():
        if not (path / "meta.json").exists() and _is_app_project(path):
            raise ShoalError(
                "JOB_META_MISSING",
                f"{path} is an app project (pyproject.toml with [tool.shoal.app]), not a job folder",
                hint=f"Run it with 'shoal run {raw}'.",
            )
        if not (path / "meta.json").exists():
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if len(subdirs) == 1 and (subdirs[0] / "meta.json").exists():
                progress(f"Using job folder: {subdirs[0]}")
                path = subdirs[0]
        if not _folder_holds_meta(path):
            raise ShoalError("JOB_META_MISSING", f"no meta.json in {path}")
        return path
    if not _is_zip(path):
        raise _not_a_job(path)
    if not _archive_holds_meta(path):
        raise ShoalError(
            "JOB_META_MISSING", f"no meta.json at the root of {path}, nor in a single folder at its root"
        )
    return path


def _is_app_project(path: Path) -> bool:
    from shoal.app.federation import is_app_project

    return is_app_project(str(path))


def _is_zip(path: Path) -> bool:
    """A regular file that is a zip archive; anything else (a pipe, a device) is never opened."""
    import stat
    import zipfile

    return stat.S_ISREG(path.stat().st_mode) and zipfile.is_zipfile(path)


def _not_a_job(path: Path) -> ShoalError:
    import stat

    mode = path.stat().st_mode
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    kind = next((name for test, name in kinds if test(mode)), None)
    if kind is None:
        kind = "a socket" if stat.S_ISSOCK(mode) else "a file but not a zip archive"
    hint = None
    if path.name == "meta.json":
        hint = f"Pass the folder that holds meta.json: -j {path.parent}"
    return ShoalError(
        "JOB_FOLDER_NOT_FOUND",
        f"it is {kind}; -j takes a job folder or a .zip of one",
        hint=hint,
        path=str(path),
    )


def _folder_holds_meta(folder: Path) -> bool:
    """Would the server find meta.json in the zip ``zip_folder`` makes of ``folder``?"""
    from shoal.wire.archive import iter_folder_files
    from shoal.wire.jobdef import holds_meta

    meta = folder / "meta.json"
    if meta.is_file() and not meta.is_symlink():
        return True  # the usual case, without listing the whole folder
    return holds_meta([rel for rel, _ in iter_folder_files(folder)])


def _archive_holds_meta(archive: Path) -> bool:
    """Would the server find meta.json in this zip? Its entries are checked as the server
    checks them (ARCHIVE_UNSAFE, UPLOAD_TOO_LARGE), before anything is sent."""
    from shoal.wire.archive import inspect_archive
    from shoal.wire.jobdef import holds_meta

    return holds_meta([info.orig_filename for info in inspect_archive(archive)])


def cmd_submit(args: argparse.Namespace) -> Result:
    import shutil
    import tempfile
    from pathlib import Path

    from shoal.cli.live import Transfer, live
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
        bar = Transfer("uploading", source.name) if live(args) else None  # drawn if large
        try:
            answer = client.submit_job(archive, args.study, args.submit_token, on_progress=bar)
        finally:
            if bar is not None:
                bar.finish()
        if args.debug:
            kept = Path(tempfile.mkdtemp(prefix="shoal-submitted-")) / archive.name
            shutil.copy(archive, kept)
            progress(f"uploaded archive kept at {kept}")
    job_id = answer["job_id"]
    if args.wait:
        from shoal.cli.job_wait import cmd_wait

        progress(f"job_id: {job_id}")
        args.job_id, args.interval = job_id, 2.0
        return cmd_wait(args)
    if args.format == "txt":  # stdout keeps the one line scripts read; the advice is for people
        progress(
            f"next: shoal job monitor {job_id}    (follow it; 'last' or its first digits do too)\n"
            f"      shoal job download {job_id}   (its model, metrics and logs, once it ends)"
        )
    return Result({"job_id": job_id}, human=f"job_id: {job_id}")
