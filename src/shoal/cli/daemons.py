"""``shoal server start`` and ``shoal site start``: run a server or a site agent in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli.output import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    for kind, help_text in (("server", "run the server"), ("site", "run a site agent")):
        group = groups.add_parser(kind, help=help_text)
        subs = group.add_subparsers(dest=f"{kind}_command", metavar="SUBCOMMAND", parser_class=Parser)
        p = subs.add_parser("start", help=f"{help_text} in the foreground until SIGTERM")
        p.add_argument("-k", "--kit", required=True, help=f"the {kind} startup kit directory")
        p.add_argument("--workspace", default=None, help="where its data lives (default: <kit>/workspace)")
        if kind == "server":
            p.add_argument("--host", default=None, help="bind address (default: from the kit)")
            p.add_argument("--port", type=int, default=None, help="port (default: from the kit; 0 picks one)")
            p.set_defaults(handler=cmd_server_start)
            _add_migrate_store(subs)
        else:
            p.set_defaults(handler=cmd_site_start)


def _add_migrate_store(subs: Any) -> None:
    p = subs.add_parser(
        "migrate-store",
        help="copy the server's SQLite job store into PostgreSQL (the server stopped)",
    )
    p.add_argument("-k", "--kit", required=True, help="the server's startup kit directory")
    p.add_argument("--workspace", default=None, help="where its store.db is (default: <kit>/workspace)")
    p.add_argument(
        "--to",
        default=None,
        metavar="URL",
        help="postgresql://USER:PASSWORD@HOST:PORT/DATABASE (default: SHOAL_STORE_URL, then the kit's "
        "local/storage.json; prefer those: a command line is visible to other users)",
    )
    p.add_argument("--merge", action="store_true", help="a target holding rows: add only the rows it lacks")
    p.set_defaults(handler=cmd_server_migrate_store)


def cmd_server_start(args: argparse.Namespace) -> Result:
    from shoal.server.app import run_server

    workspace = Path(args.workspace) if args.workspace else None
    code = run_server(Path(args.kit).resolve(), workspace, args.host, args.port)
    return Result(None, exit_code=code)


def cmd_site_start(args: argparse.Namespace) -> Result:
    from shoal.site.agent import run_site

    workspace = Path(args.workspace) if args.workspace else None
    code = run_site(Path(args.kit).resolve(), workspace)
    return Result(None, exit_code=code)


def cmd_server_migrate_store(args: argparse.Namespace) -> Result:
    """Copy ``<workspace>/store.db`` into PostgreSQL while holding the workspace's lock, so no
    server writes the source meanwhile (decisions/0024: one schema history makes it a row copy)."""
    from shoal import settings
    from shoal.errors import ShoalError
    from shoal.server.app import _storage, lock_workspace
    from shoal.store.choice import redact
    from shoal.store.copy import copy_sqlite_to_postgres

    kit = Path(args.kit).resolve()
    workspace = Path(args.workspace).resolve() if args.workspace else kit / "workspace"
    url = (
        args.to
        or settings.text(settings.STORE_URL)
        or _storage(kit / "local" / "storage.json").get(settings.STORAGE_STORE_URL, "")
    )
    if not url:
        raise ShoalError(
            "INVALID_ARGS",
            "no PostgreSQL store named",
            hint=f"Set {settings.STORE_URL} (or pass --to postgresql://...), as the server will use it.",
        )
    handle = lock_workspace(workspace)  # refused while a server runs on it
    try:
        report = copy_sqlite_to_postgres(workspace / "store.db", url, merge=args.merge)
    finally:
        handle.close()
    shown = redact(url)
    data = {
        "source": str(workspace / "store.db"),
        "target": shown,
        "copied": report.copied,
        "present": report.present,
    }

    def human() -> str:
        lines = [f"copied {workspace / 'store.db'} into {shown}:"]
        lines += [
            f"  {table}: {n} copied"
            + (f", {report.present[table]} already there" if report.present[table] else "")
            for table, n in report.copied.items()
        ]
        lines.append(f"start the server with {settings.STORE_URL} set to that database")
        return "\n".join(lines)

    return Result(data, human)
