"""``shoal system``: the server and its sites, and what an operator does to them.

``status`` (the server, its version, uptime and store, connected sites, certificates near their
end), ``sites`` (every site the server knows, connected or not), ``remove-site``,
``restart-site`` and ``shutdown-site`` (the server relays the last two to the site's agent).
"""

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
    p = subs.add_parser("sites", help="every site the server knows: version, resources, jobs, last contact")
    add_kit_options(p, study=False)
    p.set_defaults(handler=cmd_sites)
    for action, help_text, dangerous in (
        ("remove", "remove a site from the federation (named in the server's revoked.json)", True),
        ("restart", "restart a site's agent (its running jobs lose it)", False),
        ("shutdown", "stop a site's agent (its running jobs lose it; start it again on its host)", True),
    ):
        p = subs.add_parser(f"{action}-site", help=help_text)
        p.add_argument("site", help="the site's name")
        if dangerous:
            p.add_argument("--force", action="store_true", help="do not ask for confirmation")
        add_kit_options(p, study=False)
        p.set_defaults(handler=cmd_site_action, action=action)


def cmd_status(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    client = connect(args)
    status = client.system_status()
    rows = status["sites"]
    server = status["server"]
    lines = [
        f"server: {client.address} (project {server['project']}, shoal {server.get('version', '?')}, "
        f"up {server.get('uptime_s', 0):.0f} s, store {server.get('store_bytes', 0)} bytes)",
        f"running jobs: {', '.join(status['server']['running_jobs']) or 'none'}",
    ]
    lines.append(
        table(rows, [("name", "SITE"), ("org", "ORG"), ("version", "VERSION"), ("replica", "REPLICA")])
        or "no sites connected"
    )
    for cert in status.get("expiring", []):  # a server older than this CLI sends none
        lines.append(
            f"warning: the {cert['kind']} certificate of {cert['name']} expires {cert['not_after']} "
            f"(in {cert['days_left']} days): renew it (shoal provision renew {cert['name']})"
        )
    return Result(status, human="\n".join(lines))


def cmd_sites(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect

    data = connect(args).system_sites()

    def human() -> str:
        rows = [
            {
                **r,
                "state": "connected" if r["connected"] else "away",
                "jobs": ", ".join(r["jobs"]) or "-",
                "gpus": ",".join(r.get("resources", {}).get("gpus", [])) or "-",
                "idle": f"{r['idle_s']:.0f} s" if "idle_s" in r else "-",
            }
            for r in data["sites"]
        ]
        columns = [
            ("name", "SITE"),
            ("state", "STATE"),
            ("version", "VERSION"),
            ("gpus", "GPUS"),
            ("jobs", "JOBS"),
            ("idle", "LAST CONTACT"),
        ]
        return table(rows, columns) or "no sites known"

    return Result(data, human=human)


def cmd_site_action(args: argparse.Namespace) -> Result:
    from shoal.cli.main import connect
    from shoal.cli.output import confirm
    from shoal.errors import ShoalError

    action = args.action
    if action in ("remove", "shutdown") and not confirm(f"{action} site {args.site}?", args.force):
        raise ShoalError("CONFIRMATION_REQUIRED", "not confirmed")
    data = connect(args).site_action(args.site, action)
    done = {"remove": "removed (and revoked)", "restart": "asked to restart", "shutdown": "asked to stop"}
    return Result(data, human=f"site {args.site}: {done[action]}")
