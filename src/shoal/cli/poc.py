"""``shoal poc ...``: a whole federation on this machine, for trying shoal out and for tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shoal.cli.output import Result
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    poc = groups.add_parser("poc", help="a local server and sites for trying shoal")
    subs = poc.add_subparsers(dest="poc_command", metavar="SUBCOMMAND", parser_class=Parser)
    p = subs.add_parser("prepare", help="create a CA and startup kits for a server, N sites and an admin")
    p.add_argument(
        "-n", "--number-of-sites", dest="sites", type=int, default=2, help="how many sites (default 2)"
    )
    p.add_argument("--workspace", default=None, help="where (default: ~/.shoal/poc)")
    p.add_argument("--force", action="store_true", help="replace an existing workspace")
    p.set_defaults(handler=cmd_prepare)
    p = subs.add_parser("add-user", help="issue another admin startup kit from the POC's CA")
    p.add_argument("role", choices=("project_admin", "org_admin", "lead", "member"))
    p.add_argument("email")
    p.add_argument("--org", default=None, help="the user's org (default: the POC's org)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing admin kit of that name (never the server's or a site's kit)",
    )
    p.add_argument("--workspace", default=None, help="the POC workspace (default: ~/.shoal/poc)")
    p.set_defaults(handler=cmd_add_user)
    for name, handler, help_text in (
        ("start", cmd_start, "start the server and sites in the background"),
        ("stop", cmd_stop, "stop every process the POC started"),
        ("clean", cmd_clean, "stop, then remove the workspace"),
    ):
        p = subs.add_parser(name, help=help_text)
        p.add_argument("--workspace", default=None, help="the POC workspace (default: ~/.shoal/poc)")
        if name == "start":
            p.add_argument(
                "--timeout",
                type=float,
                default=60.0,
                help="seconds to wait for the server and every site to be ready (default 60; 0: no limit)",
            )
        p.set_defaults(handler=handler)


def _workspace(args: argparse.Namespace) -> Path:
    from shoal.provision.poc import default_poc_workspace

    return Path(args.workspace).expanduser().resolve() if args.workspace else default_poc_workspace()


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_prepare(args: argparse.Namespace) -> Result:
    from shoal.provision.poc import prepare_poc
    from shoal.provision.services import stop_poc

    if args.sites < 1:
        raise ShoalError("INVALID_ARGS", "--number-of-sites must be at least 1")
    ws = _workspace(args)
    force = args.force
    if (ws / "poc.json").exists() and not force:
        if not _confirm(f"POC workspace {ws} exists. Replace it?"):
            raise ShoalError("POC_WORKSPACE_EXISTS", str(ws))
        force = True
    if force and (ws / "poc.json").exists():
        stop_poc(ws)
    data = prepare_poc(ws, n_sites=args.sites, force=force)
    human = (
        f"POC workspace: {ws}\nsites: {', '.join(data['sites'])}\n"
        f"admin startup kit (active): {data['admin_kit']}\nnext: shoal poc start"
    )
    return Result(data, human=human)


def cmd_start(args: argparse.Namespace) -> Result:
    from shoal.provision.services import start_poc

    data = start_poc(_workspace(args), timeout=args.timeout)
    lines = ["the POC was already running"] if data.get("already_running") else []
    lines += [f"server: {data['server_url']}", f"sites connected: {', '.join(data['sites'])}", "logs:"]
    lines += [f"  {name}: {path}" for name, path in data["logs"].items()]
    return Result(data, human="\n".join(lines))


def cmd_stop(args: argparse.Namespace) -> Result:
    from shoal.provision.services import stop_poc

    data = stop_poc(_workspace(args))
    return Result(data, human=f"stopped: {', '.join(data['stopped']) or 'nothing was running'}")


def cmd_clean(args: argparse.Namespace) -> Result:
    from shoal.provision.poc import clean_poc
    from shoal.provision.services import stop_poc

    ws = _workspace(args)
    if (ws / "poc.json").exists():
        stop_poc(ws)
    data = clean_poc(ws)
    return Result(data, human=f"removed {ws}")


def cmd_add_user(args: argparse.Namespace) -> Result:
    from shoal.provision.poc import DEFAULT_ORG, add_poc_admin

    kit = add_poc_admin(
        _workspace(args), args.email, args.role, org=args.org or DEFAULT_ORG, force=args.force
    )
    data = {"startup_kit": str(kit), "name": args.email, "role": args.role, "org": args.org or DEFAULT_ORG}
    return Result(
        data, human=f"admin kit for {args.email} ({args.role}): {kit}\nuse it with --startup-kit {kit}"
    )
