"""``shoal system status``: the server and the sites connected to it."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    from shoal.cli.main import Parser, add_kit_options

    system = groups.add_parser("system", help="the federation's state")
    subs = system.add_subparsers(dest="system_command", metavar="SUBCOMMAND", parser_class=Parser)
    p = subs.add_parser("status", help="show the server and connected sites")
    add_kit_options(p, study=False)
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    client = connect(args)
    status = client.system_status()
    rows = status["sites"]
    lines = [
        f"server: {client.address} (project {status['server']['project']})",
        f"running jobs: {', '.join(status['server']['running_jobs']) or 'none'}",
    ]
    lines.append(
        table(rows, [("name", "SITE"), ("org", "ORG"), ("version", "VERSION")]) or "no sites connected"
    )
    for cert in status.get("expiring", []):  # a server older than this CLI sends none
        lines.append(
            f"warning: the {cert['kind']} certificate of {cert['name']} expires {cert['not_after']} "
            f"(in {cert['days_left']} days): renew it (shoal provision renew {cert['name']})"
        )
    return Result(status, human="\n".join(lines))
