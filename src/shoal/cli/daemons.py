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
        else:
            p.set_defaults(handler=cmd_site_start)


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
