"""``shoal preflight --startup-kit DIR``: check a kit (server, site or admin) where it will run."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli.output import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    p = groups.add_parser(
        "preflight",
        help="check a startup kit on its host: files, certificates, the server, the clock",
        description="One line per check; exit 0 only when none fails (warnings, such as a "
        "certificate that expires within 30 days, do not fail).",
    )
    p.add_argument("--startup-kit", "-k", required=True, help="the kit folder (server, site or admin)")
    p.add_argument("--workspace", default=None, help="a server's workspace (default: <kit>/workspace)")
    p.set_defaults(handler=cmd_preflight)


def cmd_preflight(args: argparse.Namespace) -> Result:
    from shoal.provision.preflight import preflight

    workspace = Path(args.workspace).resolve() if args.workspace else None
    data = preflight(Path(args.startup_kit).expanduser().resolve(), workspace)

    def human() -> str:
        lines = []
        for c in data["checks"]:
            line = f"{c['status']:<5} {c['check']:<16} {c['detail']}"
            if c["status"] != "ok" and c["hint"]:
                line += f"\n      hint: {c['hint']}"
            lines.append(line)
        verdict = "all checks passed" if data["passed"] else f"FAILED: {', '.join(data['failed'])}"
        return "\n".join([*lines, verdict])

    return Result(data, human=human, exit_code=0 if data["passed"] else 1)
