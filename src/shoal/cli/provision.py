"""``shoal provision``: startup kits for a real federation, from a project file, and their life.

``shoal provision -p project.yml [-w WORKSPACE] [--force NAME]`` makes or extends a workspace;
``init`` writes an example project file; ``add-site``, ``add-user``, ``renew``, ``revoke`` and
``list`` change or show a provisioned workspace without editing the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli.output import Result
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ROLES = ("project_admin", "org_admin", "lead", "member")
_WS_HELP = "the provisioning workspace (default: ./workspace)"
# A subcommand's -w must not reset one given before it (`shoal provision -w ws add-site ...`):
# its default is "not given", and the group's own default applies.


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    p = groups.add_parser(
        "provision",
        help="startup kits for a real federation, from a project file",
        description="Without a subcommand: make or extend a workspace from a project file. New "
        "participants get kits; the others are left byte for byte unless named by --force.",
    )
    p.add_argument(
        "-p", "--project-file", default="project.yml", help="the project file (default: project.yml)"
    )
    p.add_argument("-w", "--workspace", default="workspace", help=_WS_HELP)
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="NAME",
        help="re-issue NAME's kit (repeatable); its old certificate is revoked on the server",
    )
    p.set_defaults(handler=cmd_provision)
    subs = p.add_subparsers(dest="provision_command", metavar="SUBCOMMAND", parser_class=Parser)
    s = subs.add_parser("init", help="write a commented example project file")
    s.add_argument("-o", "--output", default="project.yml", help="where (default: project.yml)")
    s.add_argument("--force", dest="replace", action="store_true", help="replace an existing file")
    s.set_defaults(handler=cmd_init)
    s = subs.add_parser("add-site", help="provision one more site without editing the project file")
    s.add_argument("name")
    s.add_argument("--org", required=True, help="the site's organisation")
    s.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help=_WS_HELP)
    s.set_defaults(handler=cmd_add_site)
    s = subs.add_parser("add-user", help="provision one more admin without editing the project file")
    s.add_argument("email")
    s.add_argument("--org", required=True, help="the admin's organisation")
    s.add_argument("--role", required=True, choices=ROLES, help="the admin's role")
    s.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help=_WS_HELP)
    s.set_defaults(handler=cmd_add_user)
    s = subs.add_parser(
        "renew", help="re-issue a kit with the same identity (the old certificate is revoked)"
    )
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help=_WS_HELP)
    s.set_defaults(handler=cmd_renew)
    s = subs.add_parser("revoke", help="put a participant on the server kit's revocation list")
    s.add_argument("name")
    s.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help=_WS_HELP)
    s.set_defaults(handler=cmd_revoke)
    s = subs.add_parser("list", help="the participants provisioned, with their certificates' lifetimes")
    s.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help=_WS_HELP)
    s.set_defaults(handler=cmd_list)


def _ws(args: argparse.Namespace) -> Path:
    return Path(args.workspace).expanduser().resolve()


def _report_text(data: dict[str, Any]) -> str:
    lines = [f"workspace: {data['workspace']}"]
    for item in data.get("issued", []):
        lines.append(f"issued: {item['kind']} {item['name']} (serial {item['serial']})")
    if data.get("unchanged"):
        lines.append(f"unchanged: {', '.join(data['unchanged'])}")
    for serial in data.get("revoked_serials", []):
        lines.append(f"revoked certificate: {serial}")
    for name in data.get("revoked", []):
        lines.append(f"revoked participant: {name}")
    if data.get("updated_kits"):
        kits = Path(data["workspace"]) / "kits"
        lines.append("kits to send: " + ", ".join(str(kits / f"{n}.zip") for n in data["updated_kits"]))
    lines += [f"notice: {n}" for n in data.get("notices", [])]
    return "\n".join(lines)


def cmd_provision(args: argparse.Namespace) -> Result:
    from shoal.provision.project import load_project
    from shoal.provision.workspace import provision

    project = load_project(Path(args.project_file))
    data = provision(project, _ws(args), force=args.force)
    return Result(data, human=lambda: _report_text(data))


def cmd_init(args: argparse.Namespace) -> Result:
    from importlib.resources import files

    out = Path(args.output)
    if out.exists() and not args.replace:
        raise ShoalError(
            "INVALID_ARGS", f"{out} exists", hint="Pass --force to replace it, or choose another -o."
        )
    text = files("shoal.provision").joinpath("example.yml").read_text()
    try:
        out.write_text(text)
    except OSError as exc:
        detail = f"cannot write {out}: {exc.strerror or exc}"
        raise ShoalError("LOCAL_FILE_ERROR", detail, path=str(out)) from exc
    return Result(
        {"project_file": str(out.resolve())},
        human=f"wrote {out}: edit it, then run: shoal provision -p {out}",
    )


def _checked(problem: str | None) -> None:
    if problem:
        raise ShoalError("INVALID_ARGS", problem)


def cmd_add_site(args: argparse.Namespace) -> Result:
    from shoal.provision.project import Participant, check_org, check_site_name
    from shoal.provision.workspace import add_participant

    _checked(check_site_name(args.name))
    _checked(check_org(args.org))
    data = add_participant(_ws(args), Participant(args.name, "site", args.org))
    return Result(data, human=lambda: _report_text(data))


def cmd_add_user(args: argparse.Namespace) -> Result:
    from shoal.provision.project import Participant, check_admin_name, check_org
    from shoal.provision.workspace import add_participant

    _checked(check_admin_name(args.email))
    _checked(check_org(args.org))
    data = add_participant(_ws(args), Participant(args.email, "admin", args.org, role=args.role))
    return Result(data, human=lambda: _report_text(data))


def cmd_renew(args: argparse.Namespace) -> Result:
    from shoal.provision.workspace import renew

    data = renew(_ws(args), args.names)
    return Result(data, human=lambda: _report_text(data))


def cmd_revoke(args: argparse.Namespace) -> Result:
    from shoal.provision.workspace import revoke

    data = revoke(_ws(args), args.name)

    def human() -> str:
        return (
            _report_text(data) + f"\nthe server honours {data['revoked_file']} without a restart; "
            "if it runs from another copy of its kit, copy this file there"
        )

    return Result(data, human=human)


def cmd_list(args: argparse.Namespace) -> Result:
    from shoal.cli.output import table
    from shoal.provision.workspace import participants

    data = participants(_ws(args))

    def human() -> str:
        rows = [
            {**r, "role": r["role"] or "", "revoked": "revoked" if r["revoked"] else ""}
            for r in data["participants"]
        ]
        columns = [
            ("name", "NAME"),
            ("kind", "KIND"),
            ("org", "ORG"),
            ("role", "ROLE"),
            ("not_after", "VALID UNTIL"),
            ("days_left", "DAYS"),
            ("revoked", ""),
        ]
        return f"project {data['project']} in {data['workspace']}\n" + table(rows, columns)

    return Result(data, human=human)
