"""``shoal config ...``: register, choose and list admin startup kits."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    config = groups.add_parser("config", help="manage registered startup kits (~/.shoal/config.toml)")
    subs = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=Parser)
    p = subs.add_parser("add", help="register an admin startup kit under an id")
    p.add_argument("kit_id")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="replace an existing registration")
    p.set_defaults(handler=cmd_add)
    p = subs.add_parser("use", help="make a registered kit the active one")
    p.add_argument("kit_id")
    p.set_defaults(handler=cmd_use)
    p = subs.add_parser("list", help="list registered kits")
    p.set_defaults(handler=cmd_list)
    p = subs.add_parser("remove", help="forget a registration (the files stay)")
    p.add_argument("kit_id")
    p.set_defaults(handler=cmd_remove)


def cmd_add(args: argparse.Namespace) -> Result:
    from shoal.api.kits import config_add

    data = config_add(args.kit_id, args.path, force=args.force)
    return Result(
        data, human=f"registered startup kit {args.kit_id}: {data['path']}\nnext: {data['next_step']}"
    )


def cmd_use(args: argparse.Namespace) -> Result:
    from shoal.api.kits import config_use

    data = config_use(args.kit_id)
    ident = data.get("identity", {})
    return Result(data, human=f"active startup kit: {args.kit_id} ({ident.get('name')}, {ident.get('role')})")


def cmd_list(args: argparse.Namespace) -> Result:
    from shoal.api.kits import config_list

    rows = config_list()
    human = table(
        rows, [("active", "ACTIVE"), ("id", "ID"), ("status", "STATUS"), ("role", "ROLE"), ("path", "PATH")]
    )
    return Result(rows, human=human or "No startup kits registered.")


def cmd_remove(args: argparse.Namespace) -> Result:
    from shoal.api.kits import config_remove

    data = config_remove(args.kit_id)
    return Result(
        data,
        human=f"removed startup kit {args.kit_id}" + (f"\n{data['warning']}" if data.get("warning") else ""),
    )
