"""SSL contexts built from a startup kit. Standard library only: the CLI uses this.

Every connection in shoal is mutual TLS against the project CA in the kit's ``rootCA.pem``:
the server accepts only clients with a certificate from that CA, and clients accept only a
server whose certificate is from that CA *and* names the host they dialled. Problems with
the kit's files are reported as ShoalError before any socket is opened.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

from shoal.errors import ShoalError
from shoal.security.kitfiles import KIT_HINT, load_identity

TYPE_CHECKING = False  # typing costs CLI start-up time (decisions/0004)
if TYPE_CHECKING:
    from typing import Any

KIT_FILES = {"server": "fed_server.json", "site": "fed_site.json", "admin": "fed_admin.json"}


def read_kit_json(kit_dir: Path) -> tuple[str, dict[str, Any]]:
    """(kind, config) of a kit: whichever ``startup/fed_*.json`` it holds.

    The kind comes from the file name, and the file's own ``kind`` must agree, so a renamed
    file cannot turn a site kit into a server kit.
    """
    startup = Path(kit_dir) / "startup"
    for kind, name in KIT_FILES.items():
        path = startup / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ShoalError("STARTUP_KIT_MISSING", f"cannot read {path}: {exc}", hint=KIT_HINT) from exc
        if not isinstance(data, dict) or data.get("kind", kind) != kind:
            raise ShoalError("STARTUP_KIT_MISSING", f"{path} is not a {kind} kit description", hint=KIT_HINT)
        return kind, data
    raise ShoalError(
        "STARTUP_KIT_MISSING",
        f"{kit_dir} is not a startup kit (no startup/fed_server.json, fed_site.json or fed_admin.json)",
        hint=KIT_HINT,
    )


def server_ssl_context(kit_dir: Path) -> ssl.SSLContext:
    """TLS 1.2+, and every client must present a certificate signed by the project CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: no shoal client resumes a session (the CLI is a new process
    # per call, and the sites' aiohttp client never offers one), and issuing two tickets per
    # handshake was ~0.9 ms of server CPU on every CLI call.
    ctx.num_tickets = 0
    return load_identity(ctx, str(Path(kit_dir) / "startup"), "server")


def client_ssl_context(kit_dir: Path) -> ssl.SSLContext:
    """For site and admin kits: present the kit's certificate, trust only the project CA's server.

    Hostname checking stays on: the server certificate names localhost and 127.0.0.1 plus
    whatever hosts provisioning was given, so a stolen server key alone cannot impersonate
    another address.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return load_identity(ctx, str(Path(kit_dir) / "startup"), "client")
