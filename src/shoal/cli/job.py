"""``shoal job ...``: submit, list, meta, wait, download."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, labelled, progress, table
from shoal.errors import ShoalError
from shoal.wire.rules import JOB_ID_RE, NAME_MAX_CHARS, SUBMIT_TOKEN_RE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from shoal.api.answers import JobMeta, JobRow
    from shoal.api.client import AdminClient

DEFAULT_JOB_FOLDER = "./current_job"  # what -j means when it is not given (FLARE's default)
INFINITY = float("inf")
# Job ids, submit tokens and names are checked here by the server's own rules
# (shoal.wire.rules), so a mistyped one is refused before a request, whatever its length or script.


def submit_token(value: str) -> str:
    if not SUBMIT_TOKEN_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "submit token must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return value


#: The job id that stands for the caller's newest job of the study.
LAST = "last"


def job_id_arg(value: str) -> str:
    """A job id as typed: its digits, the first digits of one (unique in the study), or
    ``last``; shoal.cli.main.connect turns the last two into the id."""
    if value != LAST and not JOB_ID_RE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise argparse.ArgumentTypeError(
            f"a job id is 1-16 digits 0-9 (or its first digits, or 'last'), as 'shoal job list' "
            f"shows it, not {shown!r}"
        )
    return value


def resolve_job_id(client: AdminClient, study: str, typed: str) -> str:
    """The job id ``typed`` stands for. A whole id (16 digits) is taken as it is, with no
    request; ``last`` is the study's newest job; fewer digits are the one job whose id
    starts with them, or that id itself (ids below 10^15 have fewer than 16 digits)."""
    if len(typed) == 16:
        return typed
    if typed == LAST:
        newest = client.list_jobs(study, max_results=1)
        if not newest:
            raise ShoalError("JOB_NOT_FOUND", "the study has no jobs yet", job_id=LAST, study=study)
        return str(newest[0]["job_id"])
    found = [str(row["job_id"]) for row in client.list_jobs(study, id_prefix=typed, max_results=50)]
    if typed in found or not found:
        return typed  # the id itself, or nothing: the command says JOB_NOT_FOUND as usual
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise ShoalError("JOB_ID_AMBIGUOUS", f"it could be {shown}", job_id=typed)
    return found[0]


DOWNLOAD_PARTS = ("model", "metrics", "logs", "job")


def download_parts(value: str) -> list[str]:
    """``--only model,metrics``: the parts of a result to fetch (shoal.server.results.PARTS)."""
    parts = sorted({p.strip() for p in value.split(",") if p.strip()})
    unknown = [p for p in parts if p not in DOWNLOAD_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"takes a comma-separated list of {', '.join(DOWNLOAD_PARTS)}, not {value[:60]!r}"
        )
    return parts


download_parts.__name__ = "parts"


def job_folder_arg(value: str) -> str:
    if not value:  # Path("") is the current directory: an empty -j would upload it whole
        raise argparse.ArgumentTypeError("the job folder must not be empty")
    return value


def id_prefix_arg(value: str) -> str:
    if value and not JOB_ID_RE.fullmatch(value):
        raise argparse.ArgumentTypeError("a job id prefix is up to 16 digits 0-9")
    return value


def _short_name(what: str) -> Callable[[str], str]:
    """An argparse type for a name of at most NAME_MAX_CHARS characters (its ``__name__``
    keeps --schema calling it a string)."""

    def convert(value: str) -> str:
        if len(value) > NAME_MAX_CHARS:
            raise argparse.ArgumentTypeError(
                f"{what} is at most {NAME_MAX_CHARS} characters; this one has {len(value)}"
            )
        return value

    convert.__name__ = "name"
    return convert


job_name_prefix = _short_name("a job name")
site_name = _short_name("a site name")


def _number(name: str, kind: Callable[[str], Any], zero_allowed: bool) -> Callable[[str], Any]:
    """An argparse type for a number that may not be negative (nor zero unless allowed). The
    name shows in argparse's messages and tells --schema the JSON type (cli/schema.py)."""

    def convert(value: str) -> Any:
        number = kind(value)
        if not -INFINITY < number < INFINITY:  # nan fails every comparison: no wait is "forever"
            raise argparse.ArgumentTypeError(f"must be a finite number, not {value!r}")
        if number < 0 or (number == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError("must be >= 0" if zero_allowed else "must be > 0")
        return number

    convert.__name__ = name
    return convert


non_negative = _number("non_negative", float, zero_allowed=True)
positive = _number("positive", float, zero_allowed=False)
non_negative_int = _number("non_negative_int", int, zero_allowed=True)
positive_int = _number("positive_int", int, zero_allowed=False)


DEPRECATED = {
    "list_templates": "use 'shoal recipe list'",
    "create": "use 'python job.py --export --export-dir <folder>' then 'shoal job submit -j <folder>'",
    "show_variables": "use 'shoal recipe show <name>' or the recipe API",
}


def register(groups: Any, wanted: str | None = None) -> None:
    """Add ``shoal job``; with ``wanted`` naming a subcommand, build only that one's parser
    (argparse construction is a visible share of a cold start)."""
    from shoal.cli.main import Parser, add_kit_options

    job = groups.add_parser("job", help="submit, watch and manage jobs")
    subs = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", parser_class=Parser)
    only = wanted if wanted in COMMANDS or wanted in DEPRECATED else None
    for name, (help_text, takes_id, build) in COMMANDS.items():
        if only is not None and name != only:
            continue
        p: Parser = subs.add_parser(name, help=help_text)
        if takes_id:
            p.add_argument(
                "job_id",
                type=job_id_arg,
                help="the job's id as 'shoal job list' shows it, its first digits, or 'last'",
            )
        add_kit_options(p)
        build(p)
    for name, pointer in DEPRECATED.items():
        if only is not None and name != only:
            continue
        p = subs.add_parser(name)  # no help: it works, but is no longer listed
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(handler=deprecated(name, pointer))


def deprecated(name: str, pointer: str) -> Any:
    def handler(args: argparse.Namespace) -> Result:
        from shoal.cli.output import progress

        progress(f"'shoal job {name}' is deprecated: {pointer}.")
        return Result(
            {"deprecated": True, "command": f"shoal job {name}", "replacement": pointer}, exit_code=0
        )

    return handler


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


# --- the parsers, one builder per subcommand ---


def _submit(p: Any) -> None:
    p.add_argument(
        "-j",
        "--job-folder",
        "--job_folder",
        dest="job_folder",
        type=job_folder_arg,
        default=None,
        help=f"job folder or .zip holding meta.json (default: {DEFAULT_JOB_FOLDER})",
    )
    p.add_argument(
        "--submit-token", type=submit_token, default=None, help="caller-chosen token that makes retries safe"
    )
    p.add_argument("-debug", "--debug", action="store_true", help="keep the archive that was uploaded")
    p.add_argument("--wait", action="store_true", help="then wait for the job, as 'shoal job wait' does")
    p.add_argument("--timeout", type=non_negative, default=0.0, help="with --wait: seconds to wait at most")
    p.set_defaults(handler=cmd_submit)


def _list(p: Any) -> None:
    p.add_argument("-n", "--name", type=job_name_prefix, default=None, help="job name prefix")
    p.add_argument("-i", "--id", dest="id_prefix", type=id_prefix_arg, default=None, help="job id prefix")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument(
        "-m", "--max", dest="max_results", type=positive_int, default=None, help="at most this many (newest)"
    )
    p.add_argument(
        "--submit-token", type=submit_token, default=None, help="find the job submitted with this token"
    )
    p.set_defaults(handler=cmd_list)


def _meta(p: Any) -> None:
    p.set_defaults(handler=cmd_meta)


def _waiting(name: str) -> Any:
    def build(p: Any) -> None:
        from shoal.cli.main import lazy

        p.add_argument(
            "--timeout", type=non_negative, default=0.0, help="seconds to wait at most (0: no limit)"
        )
        p.add_argument(
            "--interval", type=positive, default=2.0, help="seconds between polls when no news came"
        )
        p.set_defaults(handler=lazy("shoal.cli.job_wait", f"cmd_{name}"))
        if name == "monitor":
            p.add_argument(
                "--stats-target",
                choices=("server", "client", "all"),
                default="server",
                help="whose metrics to show",
            )
            p.add_argument(
                "--metric", action="append", default=None, help="extra metric key to show (repeatable)"
            )
            p.set_defaults(supports_jsonl=True)

    return build


def _download(p: Any) -> None:
    from shoal.cli.main import lazy

    p.add_argument("-o", "--output-dir", default=None, help="where to put <job_id>/ (default: .)")
    p.add_argument("--force", action="store_true", help="replace an existing download")
    p.add_argument(
        "--only",
        type=download_parts,
        default=None,
        metavar="PARTS",
        help="fetch only these, comma-separated: model, metrics, logs, job (default: everything)",
    )
    p.set_defaults(handler=lazy("shoal.cli.job_manage", "cmd_download"))


def _managing(name: str) -> Any:
    def build(p: Any) -> None:
        from shoal.cli.main import lazy

        if name != "clone":
            p.add_argument("--force", action="store_true", help="do not ask for confirmation")
        p.set_defaults(handler=lazy("shoal.cli.job_manage", f"cmd_{name}"))

    return build


def _logs(p: Any) -> None:
    from shoal.cli.job_observe import parse_when
    from shoal.cli.main import lazy

    p.add_argument(
        "--site",
        "--sites",
        dest="site",
        type=site_name,
        default="server",
        help="server (default), a site name, or all",
    )
    p.add_argument("--tail", type=non_negative_int, default=None, help="at most the last N lines per site")
    p.add_argument(
        "--since",
        type=parse_when,
        default=None,
        help="lines at or after this ISO timestamp (UTC unless it has an offset, as log times are)",
    )
    p.add_argument(
        "--max-bytes", type=non_negative_int, default=None, help="at most the last N bytes per site"
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="print new lines as they arrive until the job ends"
    )
    p.add_argument(
        "-t", "--timestamps", action="store_true", help="each line with the time it was logged (UTC)"
    )
    p.set_defaults(handler=lazy("shoal.cli.job_observe", "cmd_logs"))


def _log_config(p: Any) -> None:
    from shoal.cli.main import lazy

    p.add_argument(
        "level",
        nargs="?",
        default=None,
        help="DEBUG, INFO, WARNING, ERROR, CRITICAL, concise, msg_only, full, verbose or reload",
    )
    p.add_argument("--site", type=site_name, default="all", help="all (default), server, or a site name")
    p.set_defaults(handler=lazy("shoal.cli.job_observe", "cmd_log_config"))


def _stats(p: Any) -> None:
    from shoal.cli.main import lazy

    p.add_argument("--site", type=site_name, default="all", help="all (default), server, or a site name")
    p.set_defaults(handler=lazy("shoal.cli.job_observe", "cmd_stats"))


def _plot(p: Any) -> None:
    from shoal.cli.main import lazy

    p.add_argument(
        "--metric", default=None, help="the metric to draw (default: the first the global model has)"
    )
    p.add_argument(
        "--png", default=None, metavar="FILE", help="also write the plot as a PNG picture (matplotlib)"
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="on a terminal: redraw the plot of a running job as each round ends, until it ends",
    )
    p.set_defaults(handler=lazy("shoal.cli.job_plot", "cmd_plot"))


# name -> (help, takes a job id, parser builder)
COMMANDS: dict[str, tuple[str, bool, Any]] = {
    "submit": ("submit a job folder (or .zip)", False, _submit),
    "list": ("list jobs", False, _list),
    "meta": ("show a job's metadata", True, _meta),
    "wait": ("wait for a job and return one final result", True, _waiting("wait")),
    "monitor": ("follow a job, streaming progress", True, _waiting("monitor")),
    "download": ("download a finished job's result", True, _download),
    "abort": ("abort a job that has not finished", True, _managing("abort")),
    "delete": ("delete a job", True, _managing("delete")),
    "clone": ("submit a copy of a job", True, _managing("clone")),
    "logs": ("show a job's logs from the server's log store", True, _logs),
    "log-config": ("change a running job's log level or mode", True, _log_config),
    "stats": ("show a job's statistics: live while it runs, final once it ended", True, _stats),
    "plot": ("draw a job's per-round metric curve in the terminal (running or finished)", True, _plot),
}
