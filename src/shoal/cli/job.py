"""``shoal job ...``: the family's registration: one parser builder per subcommand, and the
deprecated FLARE names that still answer with a pointer.

Only the subcommand being run gets its parser built, and its handler's module is imported only
when it runs (``lazy``): submit is cli/job_submit.py, list and meta cli/job_info.py, wait and
monitor cli/job_wait.py, download, abort, delete and clone cli/job_manage.py, logs, log-config and
stats cli/job_observe.py, plot cli/job_plot.py. The argument types are cli/job_args.py's.
"""

from __future__ import annotations

import argparse

from shoal.cli.job_args import (
    DEFAULT_JOB_FOLDER,
    download_parts,
    id_prefix_arg,
    job_folder_arg,
    job_id_arg,
    job_name_prefix,
    non_negative,
    non_negative_int,
    positive,
    positive_int,
    site_name,
    submit_token,
)
from shoal.cli.output import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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


# --- the parsers, one builder per subcommand ---


def _submit(p: Any) -> None:
    from shoal.cli.main import lazy

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
    p.set_defaults(handler=lazy("shoal.cli.job_submit", "cmd_submit"))


def _list(p: Any) -> None:
    from shoal.cli.main import lazy

    p.add_argument("-n", "--name", type=job_name_prefix, default=None, help="job name prefix")
    p.add_argument("-i", "--id", dest="id_prefix", type=id_prefix_arg, default=None, help="job id prefix")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument(
        "-m", "--max", dest="max_results", type=positive_int, default=None, help="at most this many (newest)"
    )
    p.add_argument(
        "--submit-token", type=submit_token, default=None, help="find the job submitted with this token"
    )
    p.set_defaults(handler=lazy("shoal.cli.job_info", "cmd_list"))


def _meta(p: Any) -> None:
    from shoal.cli.main import lazy

    p.set_defaults(handler=lazy("shoal.cli.job_info", "cmd_meta"))


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
