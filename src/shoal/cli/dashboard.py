"""``shoal dashboard``: serve a local web page of the federation as this admin sees it.

Only the parser is built here; the web server (aiohttp, ``shoal.dashboard``) is imported when
the command runs, so no other command's start-up pays for it.
"""

from __future__ import annotations

import argparse

from shoal.cli.output import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORT = 8750
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(groups: Any) -> None:
    from shoal.cli.main import add_kit_options

    p = groups.add_parser(
        "dashboard",
        help="a local web page: sites, jobs, live curves and logs, the actions this admin may take",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    add_kit_options(p)
    p.set_defaults(handler=cmd_dashboard, supports_jsonl=True)


def cmd_dashboard(args: argparse.Namespace) -> Result:
    """Check the kit reaches the server, then serve until Ctrl-C or SIGTERM. The address with
    its one-time token goes to stdout (a jsonl event with ``--format jsonl``)."""
    import asyncio
    import sys

    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.cli.output import emit_event, progress
    from shoal.dashboard.app import serve
    from shoal.errors import ShoalError

    if not 0 <= args.port <= 65535:
        raise ShoalError("INVALID_ARGS", f"--port must be 0 to 65535, not {args.port}")
    kit = resolve_admin_kit(args.kit_id, args.startup_kit)
    with AdminClient(kit) as client:
        client.health()  # a kit that cannot reach the server fails now, not in the browser
    urls: list[str] = []

    def announce(url: str) -> None:
        urls.append(url)
        who = f"{kit.name} ({kit.role}, {kit.org})"
        if args.format == "jsonl":
            emit_event({"event": "listening", "url": url, "admin": who, "server": f"{kit.host}:{kit.port}"})
        elif args.format == "txt":
            sys.stdout.write(f"{url}\n")
            sys.stdout.flush()
        else:
            progress(url)
        progress(f"shoal dashboard for {who} on the server {kit.host}:{kit.port}, study '{args.study}'.")
        progress("Open the address above in a browser; its token works once. Ctrl-C stops the dashboard.")
        if args.host not in LOOPBACK:
            progress(
                f"warning: listening on {args.host}, beyond this machine, over plain HTTP: the token and the "
                "session cookie can be read on the network. Prefer 127.0.0.1 and an SSH tunnel."
            )

    asyncio.run(serve(kit, args.study, args.host, args.port, announce))
    return Result({"url": urls[0] if urls else None, "stopped": True}, human=None)
